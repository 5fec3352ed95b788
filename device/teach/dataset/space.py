"""The space policy: the size limit (all images together), the free-space floor of the file system, and a
size count that follows the disk (another process appended to the index: count the images again)."""

from __future__ import annotations

import os
from pathlib import Path

from device.layout import find_images

INDEX = "index.jsonl"
DEFAULT_LIMIT_BYTES = 2_000_000_000
DEFAULT_MIN_FREE_BYTES = 500_000_000
DEFAULT_UNCERTAIN_BYTES = 50_000_000
DEFAULT_ROOT = Path("/var/lib/edgecam/dataset")


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


class Space:
    """Mixed into Dataset: needs root, bytes, index_size, frame_bytes, limit_bytes, min_free_bytes."""

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
