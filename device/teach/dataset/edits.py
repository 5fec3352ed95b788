"""Edits of frames already recorded: move, delete (undoable: only the newest delete), restore, a class
renamed or deleted. Every edit holds the data set's edit lock (lock.py) across processes, every path comes
through paths.py, and every move is one rename that never replaces (files.rename_new). A delete moves its
frames into ``.deleted/BATCH/``; the older batch is purged only once this delete has really moved a frame,
so a delete that moved nothing keeps the last undo and answers no undo id."""

from __future__ import annotations

import os
import re
import shutil
import stat
import time
from pathlib import Path

from device.layout import find_images, is_image_file
from device.teach.dataset.errors import DatasetError, DatasetFull, short_error
from device.teach.dataset.files import rename_new
from device.teach.dataset.paths import CLASS_NAME, check_class_name, frame_bytes, parse_frame
from device.teach.dataset.ring import UNCERTAIN
from device.teach.dataset.writer import NAME_TRIES

DELETED = ".deleted"  # the newest deleted frames, until the next delete (undo)
MAX_BATCH = 500  # frames one bulk request may name
BATCH_NAME = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{8}")


def check_batch(files) -> list:
    if not isinstance(files, list) or not files:
        raise DatasetError("name the frames as a list of data-set paths, e.g. [\"paper/20261129-010203-0007.jpg\"].")
    if len(files) > MAX_BATCH:
        raise DatasetError(f"{len(files)} frames in one request: at most {MAX_BATCH}; send them in parts.")
    return files


def is_real_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


class BulkEdits:
    """Mixed into Dataset: needs root, lock, edits (lock.EditLock), bytes and the Classes, Writer and
    UncertainRing methods."""

    def delete(self, relative: str) -> str:
        """Delete one frame for good (a link: the link)."""
        with self.edits:
            path = self.resolve(relative)
            with self.lock:
                size = frame_bytes(path)
                path.unlink()
                self.bytes = max(0, self.bytes - size)
                self._index({"file": relative, "deleted": True, "time": round(time.time(), 3)})
        return relative

    def _rename_into(self, path: Path, folder: Path, preferred: str) -> str:
        """Rename PATH into FOLDER under PREFERRED, or else a new frame name, never over a frame -> the name."""
        if rename_new(path, folder / preferred):
            return preferred
        now = time.time()
        for _ in range(NAME_TRIES):
            name = self._new_name(now)
            if rename_new(path, folder / name):
                return name
        raise DatasetError(f"{folder} has no free frame name after {NAME_TRIES} tries: check the folder.")

    def move(self, files, label: str) -> dict:
        """Move each of FILES (class frames or .uncertain/ID) into class LABEL, each by one rename (atomic per
        frame, never over another frame; a failure leaves that frame where it was) -> {"moved": [{"file",
        "to"}], "failed": [{"file", "error"}]}."""
        self.require_class(label)
        moved, failed = [], []
        with self.edits:
            for relative in check_batch(files):
                try:
                    if isinstance(relative, str) and relative.startswith(f"{UNCERTAIN}/"):
                        moved.append({"file": relative,
                                      "to": self.label_uncertain(relative[len(UNCERTAIN) + 1:], label)})
                        continue
                    path = self.resolve(relative)
                    if path.parent.name == label:
                        moved.append({"file": relative, "to": relative})
                        continue
                    with self.lock:
                        name = self._rename_into(path, self.root / label, path.name)
                        self._index({"file": f"{label}/{name}", "label": label, "from": relative,
                                     "time": round(time.time(), 3)})
                    moved.append({"file": relative, "to": f"{label}/{name}"})
                except (DatasetError, DatasetFull, OSError) as error:
                    failed.append({"file": str(relative), "error": short_error(error)})
        return {"moved": moved, "failed": failed}

    def remove(self, files) -> dict:
        """Delete FILES (class frames or .uncertain/ID) so that :meth:`restore` can bring the class frames back:
        each is renamed into .deleted/BATCH/ (atomic per frame), which keeps only the newest batch ->
        {"removed": [...], "failed": [{"file", "error"}], "undo": BATCH, or None when no class frame moved}."""
        removed, failed, moved = [], [], 0
        batch = self._batch_name()
        folder = self.root / DELETED / batch
        with self.edits:
            for relative in check_batch(files):
                try:
                    if isinstance(relative, str) and relative.startswith(f"{UNCERTAIN}/"):
                        self.discard_uncertain(relative[len(UNCERTAIN) + 1:])
                        removed.append(relative)
                        continue
                    path = self.resolve(relative)
                    with self.lock:
                        size = frame_bytes(path)
                        path_in_batch = folder / relative
                        path_in_batch.parent.mkdir(parents=True, exist_ok=True)
                        if not rename_new(path, path_in_batch):
                            raise DatasetError(f"{relative} is named twice in this delete.")
                        moved += 1
                        self.bytes = max(0, self.bytes - size)
                        self._index({"file": relative, "deleted": True, "time": round(time.time(), 3)})
                    removed.append(relative)
                except (DatasetError, OSError) as error:
                    failed.append({"file": str(relative), "error": short_error(error)})
            if moved:
                self._purge_deleted(keep=batch)  # only now may the older undo go
            else:
                shutil.rmtree(folder, ignore_errors=True)  # (made for a frame whose rename then failed)
        return {"removed": removed, "failed": failed, "undo": batch if moved else None}

    def restore(self, batch) -> dict:
        """Undo :meth:`remove` or :meth:`remove_class`: its frames (and a deleted class, even an empty one)
        back where they were, never over a frame that took the name meanwhile -> {"restored": [...],
        "classes": [...], "failed": [...]}."""
        folder = self.root / DELETED / batch if isinstance(batch, str) and BATCH_NAME.fullmatch(batch) else None
        restored, classes, failed = [], [], []
        with self.edits:
            if folder is None or not is_real_folder(folder):
                raise DatasetError("there is nothing to undo: only the newest delete can be undone.")
            with self.lock:
                for entry in sorted(os.scandir(folder), key=lambda entry: entry.name):
                    if not entry.is_dir(follow_symlinks=False) or not CLASS_NAME.fullmatch(entry.name):
                        failed.append({"file": entry.name, "error": "not a class folder of this data set"})
                        continue
                    self._restore_class(Path(entry.path), restored, classes, failed)
                if not failed:
                    shutil.rmtree(folder, ignore_errors=True)
        return {"restored": restored, "classes": classes, "failed": failed}

    def _restore_class(self, deleted: Path, restored: list, classes: list, failed: list) -> None:
        label, target = deleted.name, self.root / deleted.name
        if not os.path.lexists(target) and rename_new(deleted, target):  # a deleted class: one rename back
            classes.append(label)
            for path in sorted(target.iterdir()):
                if not path.name.startswith(".") and is_image_file(path.name):
                    self._restored(f"{label}/{path.name}", restored)
            return
        if not is_real_folder(target):
            failed.append({"file": label, "error": "a file or link took the class's name: move it away"})
            return
        for path in sorted(deleted.iterdir()):
            relative = f"{label}/{path.name}"
            try:
                parse_frame(relative)
                if not rename_new(path, target / path.name):  # never over a frame that took the name meanwhile
                    raise DatasetError(f"{relative} exists again")
                self._restored(relative, restored)
            except (DatasetError, OSError) as error:
                failed.append({"file": relative, "error": short_error(error)})

    def _restored(self, relative: str, restored: list) -> None:
        self.bytes += frame_bytes(self.root / relative)
        self._index({"file": relative, "label": relative.split("/")[0], "restored": True,
                     "time": round(time.time(), 3)})
        restored.append(relative)

    def rename_class(self, name: str, new_name: str) -> str:
        """Rename class NAME to NEW_NAME (one rename of its folder, never over another) -> NEW_NAME."""
        self.require_class(name)
        check_class_name(new_name)
        with self.edits, self.lock:
            if not is_real_folder(self.root / name):
                raise DatasetError(f"class {name!r} is a link, not a folder: rename it in a shell.")
            if not rename_new(self.root / name, self.root / new_name):
                raise DatasetError(f"class {new_name!r} exists already: move the frames instead (select all, "
                                   "move to).")
            self._index({"class": name, "renamed": new_name, "time": round(time.time(), 3)})
        return new_name

    def remove_class(self, name: str) -> dict:
        """Delete class NAME with its frames, undoable like :meth:`remove` (an empty class too) ->
        {"removed", "undo"}."""
        self.require_class(name)
        batch = self._batch_name()
        with self.edits, self.lock:
            if not is_real_folder(self.root / name):
                raise DatasetError(f"class {name!r} is a link, not a folder: remove it in a shell.")
            size = sum(frame_bytes(path) for path in find_images(self.root / name))
            target = self.root / DELETED / batch / name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                if not rename_new(self.root / name, target):
                    raise DatasetError(f"class {name!r} could not be deleted: {target} exists.")
            except BaseException:
                shutil.rmtree(target.parent, ignore_errors=True)  # the last undo stays
                raise
            self._purge_deleted(keep=batch)
            self.bytes = max(0, self.bytes - size)
            self._index({"class": name, "deleted": True, "time": round(time.time(), 3)})
        return {"removed": name, "undo": batch}

    @staticmethod
    def _batch_name() -> str:
        """A fresh .deleted/BATCH folder name."""
        return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(4).hex()}"

    def _purge_deleted(self, keep: str) -> None:
        """Empty .deleted/ but for the batch KEEP (the delete that just moved frames): only the newest delete
        can be undone. Called with the edit lock held, so no other process's delete is half way in there."""
        deleted = self.root / DELETED
        if not is_real_folder(deleted):
            return
        for old in deleted.iterdir():
            if old.name == keep:
                continue
            if is_real_folder(old):
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
