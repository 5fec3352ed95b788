"""The data set's two errors, and the one line a failed frame reports."""

from __future__ import annotations

import errno
from pathlib import Path


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


def short_error(error: Exception) -> str:
    """One line without the data set's absolute paths."""
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    return str(error).splitlines()[0] if str(error) else type(error).__name__
