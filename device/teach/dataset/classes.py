"""Classes and their frames as the Teach view lists them: names, counts, the newest few, and pages of a
class's frames (newest first)."""

from __future__ import annotations

from pathlib import Path

from device.layout import is_image_file
from device.teach.dataset.errors import DatasetError, disk_full
from device.teach.dataset.paths import CLASS_NAME, check_class_name, frame_path

MAX_CLASSES = 50
LATEST = 8
PAGE = 48  # frames per page of the Teach view's grid
PAGE_MAX = 500


class Classes:
    """Mixed into Dataset: needs root and lock."""

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

    def _frame_names(self, label: str) -> list:
        """LABEL's frame file names, newest first."""
        return sorted((path.name for path in (self.root / label).iterdir()
                       if path.is_file() and not path.name.startswith(".") and is_image_file(path)), reverse=True)

    def summary(self) -> list:
        """[{"name", "count", "latest": [{"file"}, ... newest first]}] per class."""
        classes = []
        for name in self.class_names():
            files = self._frame_names(name)
            classes.append({"name": name, "count": len(files),
                            "latest": [{"file": f"{name}/{file}"} for file in files[:LATEST]]})
        return classes

    def require_class(self, label) -> str:
        check_class_name(label)
        if not (self.root / label).is_dir():
            raise DatasetError(f"class {label!r} does not exist in {self.root}: add it first (POST /api/classes "
                               "or --label with capture, which creates it).")
        return label

    def count(self, label: str) -> int:
        return len(self._frame_names(label))

    def resolve(self, relative) -> Path:
        """A path from /api/dataset -> the frame (a link stays the link); DatasetError for anything else."""
        return frame_path(self.root, relative)

    def frames(self, label: str, offset: int = 0, limit: int | None = None) -> dict:
        """One page of class LABEL's frames, newest first -> {"label", "total", "offset", "files": [...]}."""
        self.require_class(label)
        files = self._frame_names(label)
        offset, limit = max(0, int(offset)), max(1, min(PAGE_MAX, int(limit or PAGE)))
        return {"label": label, "total": len(files), "offset": offset,
                "files": [f"{label}/{name}" for name in files[offset:offset + limit]]}
