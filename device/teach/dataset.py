"""The captured data set on the device: class folders of camera frames, as the trainer reads them.

    DATASET/
      paper/20261129-010203-0007.jpg      the full camera frame (not the model-size crop), JPEG
      rock/...
      index.jsonl                         one line per capture: file, label, time, source, model, reading
      .uncertain/                         frames the model was unsure of (a ring bounded by count and MB)
        20261129-010203-0008.jpg
        ring.json                         their readings, oldest first

Every image is written to a temporary name and renamed, so a killed daemon leaves no half files. Before a
write, the size limit (all images together) and the free-space floor of the file system are checked; when
either would be crossed, :class:`DatasetFull` says which and what to do. numpy + Pillow only.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import threading
import time
from collections import OrderedDict
from pathlib import Path

from device.layout import find_images, is_image_file
from device.manifest import atomic_write_text

INDEX = "index.jsonl"
UNCERTAIN = ".uncertain"
RING = "ring.json"
CLASS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
JPEG_QUALITY = 90
LATEST = 8
DEFAULT_LIMIT_BYTES = 2_000_000_000
DEFAULT_MIN_FREE_BYTES = 500_000_000
DEFAULT_UNCERTAIN_BYTES = 50_000_000
DEFAULT_ROOT = Path("/var/lib/edgecam/dataset")


class DatasetError(ValueError):
    """Bad input (unknown class, bad name, a path outside the data set). The message says what to do."""


class DatasetFull(RuntimeError):
    """Recording stopped: the size limit or the free-space floor would be crossed."""


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
    if not isinstance(name, str) or not CLASS_NAME.match(name):
        raise DatasetError(f"class name {name!r} is not allowed: use 1-40 letters, digits, '-' or '_' "
                           "(e.g. paper, rock, nothing).")
    return name


def encode_jpeg(frame, quality: int = JPEG_QUALITY) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_atomic(path: Path, content: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(temporary, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


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
        self.bytes = sum(path.stat().st_size for path in find_images(self.root))
        self.ring: OrderedDict = OrderedDict()  # id -> {"id", "file", "label", "confidence", "time", "bytes"}
        self._load_ring()

    # ---- space --------------------------------------------------------------------------------
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
        free = self.free_bytes()
        if free - extra < self.min_free_bytes:
            return (f"the disk is nearly full: {free / 1e6:.1f} MB free, and recording stops at "
                    f"{self.min_free_bytes / 1e6:.1f} MB (--min-free-mb) so the system keeps running. "
                    "Free some space or pull the data set to your computer and clear it.")
        return None

    # ---- classes and frames -------------------------------------------------------------------
    def class_names(self) -> list:
        return sorted(path.name for path in self.root.iterdir()
                      if path.is_dir() and not path.name.startswith(".") and CLASS_NAME.match(path.name))

    def add_class(self, name: str) -> str:
        check_class_name(name)
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

    def save(self, frame, label: str, source: str = "", model: str = "", reading: dict | None = None) -> tuple:
        """Write FRAME (RGB uint8) into class LABEL -> (relative file, that class's count). Raises DatasetError
        for an unknown class, DatasetFull when recording must stop."""
        self.require_class(label)
        content = encode_jpeg(frame)
        with self.lock:
            self.frame_bytes = len(content)
            reason = self.blocked(len(content))
            if reason:
                raise DatasetFull(reason)
            now = time.time()
            relative = f"{label}/{self._new_name(now)}"
            write_atomic(self.root / relative, content)
            self.bytes += len(content)
            self._index({"file": relative, "label": label, "time": round(now, 3), "source": source, "model": model,
                         "reading": reading})
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
        with open(self.root / INDEX, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record, separators=(",", ":")) + "\n")

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
        atomic_write_text(self._ring_dir() / RING, json.dumps(list(self.ring.values())) + "\n")

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
            identifier = self._new_name(now)
            write_atomic(self._ring_dir() / identifier, content)
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
            reason = self.blocked(entry["bytes"])
            if reason:
                raise DatasetFull(reason)
            relative = f"{label}/{entry['id']}"
            shutil.move(str(self._ring_dir() / entry["id"]), str(self.root / relative))
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
                    target = self.root / label / path.name
                    if path.parent.name == label:
                        moved.append({"file": relative, "to": relative})
                        continue
                    if target.exists():
                        raise DatasetError(f"{label}/{path.name} exists already")
                    os.rename(path, target)
                    self._index({"file": f"{label}/{path.name}", "label": label, "from": relative,
                                 "time": round(time.time(), 3)})
                moved.append({"file": relative, "to": f"{label}/{path.name}"})
            except (DatasetError, DatasetFull, OSError) as error:
                failed.append({"file": str(relative), "error": short_error(error)})
        return {"moved": moved, "failed": failed}

    def remove(self, files) -> dict:
        """Delete FILES (class frames or .uncertain/ID) so that :meth:`restore` can bring the class frames back:
        each is renamed into .deleted/ (atomic per frame), which keeps only the newest batch ->
        {"removed": [...], "failed": [{"file", "error"}], "undo": BATCH or None}."""
        removed, failed = [], []
        batch = self._new_batch()
        for relative in check_batch(files):
            try:
                if isinstance(relative, str) and relative.startswith(f"{UNCERTAIN}/"):
                    self.discard_uncertain(relative[len(UNCERTAIN) + 1:])
                    removed.append(relative)
                    continue
                path = self.resolve(relative)
                with self.lock:
                    size = path.stat().st_size
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
                    if target.exists():
                        raise DatasetError(f"{relative} exists again")
                    target.parent.mkdir(exist_ok=True)
                    size = path.stat().st_size
                    os.rename(path, target)
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
        batch = self._new_batch()
        with self.lock:
            size = sum(path.stat().st_size for path in find_images(self.root / name))
            target = self.root / DELETED / batch / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(self.root / name, target)
            self.bytes = max(0, self.bytes - size)
            self._index({"class": name, "deleted": True, "time": round(time.time(), 3)})
        return {"removed": name, "undo": batch}

    def _new_batch(self) -> str:
        """A fresh .deleted/BATCH folder name; older batches are purged (only the newest delete can be undone)."""
        with self.lock:
            deleted = self.root / DELETED
            if deleted.is_dir():
                for old in deleted.iterdir():
                    if old.is_dir():
                        shutil.rmtree(old, ignore_errors=True)
                    else:
                        old.unlink(missing_ok=True)
            return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(4).hex()}"


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
