"""The captured data set on the device: class folders of camera frames, as the trainer reads them.

    DATASET/
      paper/20261129-010203-0007.jpg      the camera's frame, not the model-size crop (docs/capture.md), JPEG
      rock/...
      index.jsonl                         one line per capture: file, label, time, source, model, reading
      .uncertain/                         frames the model was unsure of (a ring bounded by count and MB)
        20261129-010203-0008.jpg
        ring.json                         their readings, oldest first

One writer owns the file names, in every process that records (the daemon and ``python -m device capture``
may write into one data set at once): an image is written complete under a temporary name, then linked to
its final name, and a link never replaces a file. A name another writer took meanwhile is skipped for the
next number, so no frame overwrites another, and a killed writer leaves no half file. ``index.jsonl`` takes
each record in one append. The size count follows the disk: when another process has appended to the index,
the images are counted again before the next write. Before a write, the size limit (all images together)
and the free-space floor of the file system are checked; when either would be crossed, :class:`DatasetFull`
says which and what to do. A class name is 1-40 letters, digits, ``-`` or ``_``, matched whole; a data set
holds at most MAX_CLASSES classes (a Teach view beyond that has no room for its buttons, and a head's
held-out fifth no frames per class). numpy + Pillow only.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import threading
import time
from collections import OrderedDict
from pathlib import Path

from device.atomic import atomic_write
from device.layout import find_images, is_image_file

INDEX = "index.jsonl"
UNCERTAIN = ".uncertain"
RING = "ring.json"
CLASS_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")  # always fullmatch: match(...$) lets "paper\n" through
MAX_CLASSES = 50
NAME_TRIES = 10_000  # numbers tried for one second's frames before giving up (never reached in practice)
JPEG_QUALITY = 90
LATEST = 8
DEFAULT_LIMIT_BYTES = 2_000_000_000
DEFAULT_MIN_FREE_BYTES = 500_000_000
DEFAULT_UNCERTAIN_BYTES = 50_000_000
DEFAULT_ROOT = Path("/var/lib/edgecam/dataset")


class DatasetError(ValueError):
    """Bad input (unknown class, bad name, a path outside the data set). The message says what to do."""


class DatasetFull(RuntimeError):
    """Recording stopped: the size limit or the free-space floor would be crossed, or the disk is full."""


class disk_full:
    """``with disk_full(self.root):`` turns ENOSPC/EDQUOT into :class:`DatasetFull` (the disk filled up between
    the free-space check and the write, e.g. another program wrote meanwhile)."""

    def __init__(self, root: Path):
        self.root = root

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DatasetFull(f"the disk is full: {error.filename or self.root} could not be written "
                              f"({error.strerror}). Free some space or pull the data set to your computer and "
                              "clear it.") from None
        return False


def default_root(name: str, state_dir=None) -> Path:
    """STATE/dataset with a state folder (--state-dir, $EDGECAM_STATE_DIR, systemd's $STATE_DIRECTORY, an
    installed /var/lib/edgecam this user may write: device/state.py), else /var/lib/edgecam/dataset when it
    exists and is writable, else ./data/NAME-own."""
    from device.state import DATASET, device_state_dir

    folder = device_state_dir(state_dir)
    if folder is not None:
        return Path(folder) / DATASET
    if DEFAULT_ROOT.is_dir() and os.access(DEFAULT_ROOT, os.W_OK):
        return DEFAULT_ROOT
    return Path("data") / f"{name}-own"


def check_class_name(name) -> str:
    if not isinstance(name, str) or not CLASS_NAME.fullmatch(name):
        raise DatasetError(f"class name {name!r} is not allowed: use 1-40 letters, digits, '-' or '_' "
                           "(e.g. paper, rock, nothing).")
    return name


def encode_jpeg(frame, quality: int = JPEG_QUALITY) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_temporary(folder: Path, content: bytes) -> Path:
    """CONTENT, complete and on disk, under a hidden name in FOLDER that no other writer uses."""
    temporary = folder / f".capture.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        with open(temporary, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def link_new(source: Path, target: Path) -> bool:
    """Give the complete file SOURCE the name TARGET unless TARGET exists (then False; nothing replaced).
    A file system without hard links (FAT on a USB stick) gets an exclusive create, then a replace."""
    try:
        os.link(source, target)
        return True
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))  # the name is ours now
    except FileExistsError:
        return False
    os.replace(source, target)
    return True


class Dataset:
    """One data-set folder; safe to call from the HTTP threads and the inference loop at once."""

    def __init__(self, root, limit_bytes: int = DEFAULT_LIMIT_BYTES, min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
                 keep_uncertain: int = 0, uncertain_bytes: int = DEFAULT_UNCERTAIN_BYTES):
        self.root = Path(root)
        self.limit_bytes = int(limit_bytes)
        self.min_free_bytes = int(min_free_bytes)
        self.keep_uncertain = int(keep_uncertain)
        self.uncertain_bytes = int(uncertain_bytes)
        self.lock = threading.RLock()
        self.sequence = 0
        self.frame_bytes = 0  # the last frame's JPEG size: what the next capture will roughly need
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DatasetError(f"--dataset {self.root} cannot be created ({error.strerror}): pick a writable "
                               "folder with --dataset DIR.") from None
        self.index_size = -1  # index.jsonl's size after this object's last look: another writer changes it
        self.bytes = self._count_bytes()
        self.ring: OrderedDict = OrderedDict()  # id -> {"id", "file", "label", "confidence", "time", "bytes"}
        self._load_ring()

    # ---- space --------------------------------------------------------------------------------
    def _count_bytes(self) -> int:
        self.index_size = self._index_size()
        return sum(path.stat().st_size for path in find_images(self.root))

    def _index_size(self) -> int:
        try:
            return (self.root / INDEX).stat().st_size
        except FileNotFoundError:
            return 0

    def _follow_other_writers(self) -> None:
        """Count the images again when another process wrote to the data set since this object last looked."""
        if self._index_size() != self.index_size:
            self.bytes = self._count_bytes()

    def free_bytes(self) -> int:
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def blocked(self, extra: int | None = None) -> str | None:
        """Why a write of EXTRA bytes (default: one more frame like the last) must not happen now (None: it may)."""
        extra = self.frame_bytes if extra is None else extra
        if self.bytes + extra > self.limit_bytes:
            return (f"the data set is full: {self.bytes / 1e6:.1f} MB of its {self.limit_bytes / 1e6:.1f} MB limit. "
                    "Delete frames you do not need, pull it to your computer (make pull) and clear it, "
                    "or raise --dataset-limit-mb.")
        stats = os.statvfs(self.root)
        if stats.f_files and stats.f_favail < 2:  # bytes to spare, but no file entries (inodes) left
            return ("the disk has no room for new files (every inode is taken). Delete files you do not need "
                    "or pull the data set to your computer and clear it.")
        free = stats.f_bavail * stats.f_frsize  # (free_bytes(), from the same statvfs)
        if free - extra < self.min_free_bytes:
            return (f"the disk is nearly full: {free / 1e6:.1f} MB free, and recording stops at "
                    f"{self.min_free_bytes / 1e6:.1f} MB (--min-free-mb) so the system keeps running. "
                    "Free some space or pull the data set to your computer and clear it.")
        return None

    # ---- classes and frames -------------------------------------------------------------------
    def class_names(self) -> list:
        return sorted(path.name for path in self.root.iterdir()
                      if path.is_dir() and not path.name.startswith(".") and CLASS_NAME.fullmatch(path.name))

    def add_class(self, name: str) -> str:
        check_class_name(name)
        with self.lock:
            if not (self.root / name).is_dir() and len(self.class_names()) >= MAX_CLASSES:
                raise DatasetError(f"the data set already has {MAX_CLASSES} classes, the most it takes: delete a "
                                   "class you do not need (or start another data set with --dataset DIR).")
            with disk_full(self.root):
                (self.root / name).mkdir(exist_ok=True)
        return name

    def summary(self) -> list:
        """[{"name", "count", "latest": [{"file"}, ... newest first]}] per class."""
        classes = []
        for name in self.class_names():
            files = sorted((path for path in (self.root / name).iterdir()
                            if path.is_file() and not path.name.startswith(".") and is_image_file(path)),
                           key=lambda path: path.name, reverse=True)
            classes.append({"name": name, "count": len(files),
                            "latest": [{"file": f"{name}/{path.name}"} for path in files[:LATEST]]})
        return classes

    def require_class(self, label) -> str:
        check_class_name(label)
        if not (self.root / label).is_dir():
            raise DatasetError(f"class {label!r} does not exist in {self.root}: add it first (POST /api/classes "
                               "or --label with capture, which creates it).")
        return label

    def count(self, label: str) -> int:
        return sum(1 for path in (self.root / label).iterdir() if path.is_file() and is_image_file(path)
                   and not path.name.startswith("."))

    def _new_name(self, now: float) -> str:
        self.sequence += 1
        return f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{self.sequence:04d}.jpg"

    def _place(self, source: Path, folder: Path, now: float, preferred: str | None = None) -> str:
        """Link the complete file SOURCE into FOLDER under PREFERRED, or else a new name, that no writer has
        taken -> that name. SOURCE stays (the caller removes it)."""
        if preferred and link_new(source, folder / preferred):
            return preferred
        for _ in range(NAME_TRIES):
            name = self._new_name(now)
            if link_new(source, folder / name):
                return name
        raise DatasetError(f"{folder} has no free frame name for {time.ctime(now)} after {NAME_TRIES} tries: "
                           "check the folder and the clock.")

    def _write_new(self, folder: Path, content: bytes, now: float) -> str:
        """CONTENT as a new frame in FOLDER -> its file name (never an existing one's)."""
        temporary = write_temporary(folder, content)
        try:
            return self._place(temporary, folder, now)
        finally:
            temporary.unlink(missing_ok=True)

    def save(self, frame, label: str, source: str = "", model: str = "", reading: dict | None = None) -> tuple:
        """Write FRAME (RGB uint8) into class LABEL -> (relative file, that class's count). Raises DatasetError
        for an unknown class, DatasetFull when recording must stop."""
        self.require_class(label)
        content = encode_jpeg(frame)
        with self.lock:
            self.frame_bytes = len(content)
            self._follow_other_writers()
            reason = self.blocked(len(content))
            if reason:
                raise DatasetFull(reason)
            now = time.time()
            with disk_full(self.root):
                relative = f"{label}/{self._write_new(self.root / label, content, now)}"
                try:
                    self._index({"file": relative, "label": label, "time": round(now, 3), "source": source,
                                 "model": model, "reading": reading})
                except BaseException:  # a frame is kept only with its index line: what is reported is what is there
                    (self.root / relative).unlink(missing_ok=True)
                    raise
            self.bytes += len(content)
            return relative, self.count(label)

    def resolve(self, relative) -> Path:
        """A path from /api/dataset -> the file; DatasetError for anything outside the data set."""
        if not isinstance(relative, str) or not relative or "\\" in relative or "\x00" in relative:
            raise DatasetError(f"file {relative!r} is not a data-set path such as paper/20261129-010203-0007.jpg.")
        path = (self.root / relative).resolve()
        root = self.root.resolve()
        if root not in path.parents or not is_image_file(path) or relative.startswith("."):
            raise DatasetError(f"file {relative!r} is outside the data set: use a path from /api/dataset.")
        if not path.is_file():
            raise DatasetError(f"file {relative!r} does not exist (deleted already?). Reload the list.")
        return path

    def delete(self, relative: str) -> str:
        path = self.resolve(relative)
        with self.lock:
            size = path.stat().st_size
            path.unlink()
            self.bytes = max(0, self.bytes - size)
            self._index({"file": relative, "deleted": True, "time": round(time.time(), 3)})
        return relative

    def _index(self, record: dict) -> None:
        """One append of one whole line: lines of writers in other processes never interleave with it."""
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
        descriptor = os.open(self.root / INDEX, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(descriptor, line)
            size = os.fstat(descriptor).st_size
            if written != len(line):  # the disk filled up mid-line: take the torn part back, keep whole lines
                end = os.lseek(descriptor, 0, os.SEEK_CUR)
                if size == end:  # nobody appended after it
                    os.ftruncate(descriptor, end - written)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.root / INDEX))
        finally:
            os.close(descriptor)
        if size == self.index_size + len(line):
            self.index_size = size  # only this writer wrote since the last look: the count is still right

    # ---- uncertain frames ---------------------------------------------------------------------
    def _ring_dir(self) -> Path:
        return self.root / UNCERTAIN

    def _load_ring(self) -> None:
        path = self._ring_dir() / RING
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and (self._ring_dir() / str(entry.get("id", "")) ).is_file():
                self.ring[entry["id"]] = entry

    def _save_ring(self) -> None:
        atomic_write(self._ring_dir() / RING, json.dumps(list(self.ring.values())) + "\n")

    def keep(self, frame, label: str, confidence: float, source: str = "", model: str = "") -> str | None:
        """Add an uncertain FRAME to the ring (oldest dropped first past --keep-uncertain frames or its MB)
        -> its id; None when the ring is off or the disk checks refuse it."""
        if self.keep_uncertain <= 0:
            return None
        content = encode_jpeg(frame)
        with self.lock:
            if self.free_bytes() - len(content) < self.min_free_bytes:
                return None
            self._ring_dir().mkdir(exist_ok=True)
            now = time.time()
            identifier = self._write_new(self._ring_dir(), content, now)
            self.ring[identifier] = {"id": identifier, "file": f"{UNCERTAIN}/{identifier}", "label": label,
                                     "confidence": round(float(confidence), 4), "time": round(now, 3),
                                     "source": source, "model": model, "bytes": len(content)}
            while self.ring and (len(self.ring) > self.keep_uncertain or self.ring_bytes() > self.uncertain_bytes):
                _, oldest = self.ring.popitem(last=False)
                (self._ring_dir() / oldest["id"]).unlink(missing_ok=True)
            self._save_ring()
            return identifier if identifier in self.ring else None

    def ring_bytes(self) -> int:
        return sum(entry["bytes"] for entry in self.ring.values())

    def uncertain(self) -> list:
        """Newest first, as /api/dataset lists them."""
        return [{key: entry[key] for key in ("id", "file", "label", "confidence", "time")}
                for entry in reversed(self.ring.values())]

    def _take(self, identifier) -> dict:
        entry = self.ring.get(identifier) if isinstance(identifier, str) else None
        if entry is None:
            raise DatasetError(f"uncertain frame {identifier!r} is not in the ring (dropped as older frames came, "
                               "or handled already). Reload the list.")
        return entry

    def label_uncertain(self, identifier: str, label: str) -> str:
        """Move an uncertain frame into class LABEL -> its new relative file."""
        check_class_name(label)
        if not (self.root / label).is_dir():
            raise DatasetError(f"class {label!r} does not exist: add it first.")
        with self.lock:
            entry = self._take(identifier)
            self._follow_other_writers()
            reason = self.blocked(entry["bytes"])
            if reason:
                raise DatasetFull(reason)
            kept = self._ring_dir() / entry["id"]
            with disk_full(self.root):
                relative = f"{label}/{self._place(kept, self.root / label, entry['time'], entry['id'])}"  # never over a capture
            kept.unlink(missing_ok=True)  # (gone already where a file system without hard links renamed it)
            del self.ring[identifier]
            self._save_ring()
            self.bytes += entry["bytes"]
            self._index({"file": relative, "label": label, "time": round(time.time(), 3), "source": entry["source"],
                         "model": entry["model"], "reading": {"label": entry["label"],
                                                              "confidence": entry["confidence"]},
                         "from": "uncertain"})
        return relative

    def discard_uncertain(self, identifier: str) -> str:
        with self.lock:
            entry = self._take(identifier)
            (self._ring_dir() / entry["id"]).unlink(missing_ok=True)
            del self.ring[identifier]
            self._save_ring()
        return identifier

    def resolve_any(self, relative) -> Path:
        """resolve(), also for the uncertain frames' files (.uncertain/ID)."""
        if isinstance(relative, str) and relative.startswith(f"{UNCERTAIN}/"):
            entry = self.ring.get(relative[len(UNCERTAIN) + 1:])
            if entry is None:
                raise DatasetError(f"uncertain frame {relative!r} is gone (dropped or handled). Reload the list.")
            return self._ring_dir() / entry["id"]
        return self.resolve(relative)

    # ---- many frames at once, paging, classes (the Teach view's bulk tools; python -m device dataset) ------
    def frames(self, label: str, offset: int = 0, limit: int | None = None) -> dict:
        """One page of class LABEL's frames, newest first -> {"label", "total", "offset", "files": [...]}."""
        self.require_class(label)
        files = sorted((path.name for path in (self.root / label).iterdir()
                        if path.is_file() and not path.name.startswith(".") and is_image_file(path)), reverse=True)
        offset, limit = max(0, int(offset)), max(1, min(PAGE_MAX, int(limit or PAGE)))
        return {"label": label, "total": len(files), "offset": offset,
                "files": [f"{label}/{name}" for name in files[offset:offset + limit]]}

    def move(self, files, label: str) -> dict:
        """Move each of FILES (class frames or .uncertain/ID) into class LABEL, each by one rename (atomic per
        frame; a failure leaves that frame where it was) -> {"moved": [{"file", "to"}], "failed": [{"file",
        "error"}]}."""
        self.require_class(label)
        moved, failed = [], []
        for relative in check_batch(files):
            try:
                if isinstance(relative, str) and relative.startswith(f"{UNCERTAIN}/"):
                    moved.append({"file": relative,
                                  "to": self.label_uncertain(relative[len(UNCERTAIN) + 1:], label)})
                    continue
                path = self.resolve(relative)
                with self.lock:
                    if path.parent.name == label:
                        moved.append({"file": relative, "to": relative})
                        continue
                    # through the capture writer's naming: never onto a frame another writer has just taken
                    name = self._place(path, self.root / label, time.time(), preferred=path.name)
                    path.unlink(missing_ok=True)  # (gone already where link_new had to rename)
                    self._index({"file": f"{label}/{name}", "label": label, "from": relative,
                                 "time": round(time.time(), 3)})
                moved.append({"file": relative, "to": f"{label}/{name}"})
            except (DatasetError, DatasetFull, OSError) as error:
                failed.append({"file": str(relative), "error": short_error(error)})
        return {"moved": moved, "failed": failed}

    def remove(self, files) -> dict:
        """Delete FILES (class frames or .uncertain/ID) so that :meth:`restore` can bring the class frames back:
        each is renamed into .deleted/ (atomic per frame), which keeps only the newest batch ->
        {"removed": [...], "failed": [{"file", "error"}], "undo": BATCH or None}."""
        removed, failed = [], []
        batch, purged = self._batch_name(), False
        for relative in check_batch(files):
            try:
                if isinstance(relative, str) and relative.startswith(f"{UNCERTAIN}/"):
                    self.discard_uncertain(relative[len(UNCERTAIN) + 1:])
                    removed.append(relative)
                    continue
                path = self.resolve(relative)
                with self.lock:
                    size = path.stat().st_size
                    if not purged:  # the older undo goes only when this delete really moves a frame
                        self._purge_deleted()
                        purged = True
                    target = self.root / DELETED / batch / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(path, target)
                    self.bytes = max(0, self.bytes - size)
                    self._index({"file": relative, "deleted": True, "time": round(time.time(), 3)})
                removed.append(relative)
            except (DatasetError, OSError) as error:
                failed.append({"file": str(relative), "error": short_error(error)})
        has_frames = (self.root / DELETED / batch).is_dir()
        return {"removed": removed, "failed": failed, "undo": batch if has_frames else None}

    def restore(self, batch) -> dict:
        """Undo :meth:`remove` (or :meth:`remove_class`): its frames back where they were ->
        {"restored": [...], "failed": [...]}."""
        if not isinstance(batch, str) or not BATCH_NAME.fullmatch(batch) or not (self.root / DELETED / batch).is_dir():
            raise DatasetError("there is nothing to undo: only the newest delete can be undone.")
        restored, failed = [], []
        folder = self.root / DELETED / batch
        with self.lock:
            for path in sorted(folder.rglob("*")):
                if not path.is_file():
                    continue
                relative = path.relative_to(folder).as_posix()
                target = self.root / relative
                try:
                    target.parent.mkdir(exist_ok=True)
                    size = path.stat().st_size
                    if not link_new(path, target):  # never replaces a frame that took the name meanwhile
                        raise DatasetError(f"{relative} exists again")
                    path.unlink(missing_ok=True)
                    self.bytes += size
                    self._index({"file": relative, "label": target.parent.name, "restored": True,
                                 "time": round(time.time(), 3)})
                    restored.append(relative)
                except (DatasetError, OSError) as error:
                    failed.append({"file": relative, "error": short_error(error)})
            if not failed:
                shutil.rmtree(folder, ignore_errors=True)
        return {"restored": restored, "failed": failed}

    def rename_class(self, name: str, new_name: str) -> str:
        """Rename class NAME to NEW_NAME (one rename of its folder) -> NEW_NAME."""
        self.require_class(name)
        check_class_name(new_name)
        with self.lock:
            if (self.root / new_name).exists():
                raise DatasetError(f"class {new_name!r} exists already: move the frames instead (select all, "
                                   "move to).")
            os.rename(self.root / name, self.root / new_name)
            self._index({"class": name, "renamed": new_name, "time": round(time.time(), 3)})
        return new_name

    def remove_class(self, name: str) -> dict:
        """Delete class NAME with its frames, undoable like :meth:`remove` -> {"removed", "undo"}."""
        self.require_class(name)
        batch = self._batch_name()
        with self.lock:
            self._purge_deleted()
            size = sum(path.stat().st_size for path in find_images(self.root / name))
            target = self.root / DELETED / batch / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(self.root / name, target)
            self.bytes = max(0, self.bytes - size)
            self._index({"class": name, "deleted": True, "time": round(time.time(), 3)})
        return {"removed": name, "undo": batch}

    @staticmethod
    def _batch_name() -> str:
        """A fresh .deleted/BATCH folder name."""
        return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(4).hex()}"

    def _purge_deleted(self) -> None:
        """Empty .deleted/ before a new delete moves frames into it: only the newest delete can be undone."""
        deleted = self.root / DELETED
        if deleted.is_dir():
            for old in deleted.iterdir():
                if old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    old.unlink(missing_ok=True)


DELETED = ".deleted"  # the newest deleted frames, until the next delete (undo)
PAGE = 48  # frames per page of the Teach view's grid
PAGE_MAX = 500
MAX_BATCH = 500  # frames one bulk request may name
BATCH_NAME = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{8}")


def check_batch(files) -> list:
    if not isinstance(files, list) or not files:
        raise DatasetError("name the frames as a list of data-set paths, e.g. [\"paper/20261129-010203-0007.jpg\"].")
    if len(files) > MAX_BATCH:
        raise DatasetError(f"{len(files)} frames in one request: at most {MAX_BATCH}; send them in parts.")
    return files


def short_error(error: Exception) -> str:
    """One line without the data set's absolute paths."""
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    return str(error).splitlines()[0] if str(error) else type(error).__name__
