"""One way to replace a file so that a power cut leaves either the old file or the new one, never a torn one.

:func:`atomic_write`: the bytes go to a temporary file in the same folder (a rename never crosses file systems),
the file is fsynced, renamed over the target, and the folder is fsynced (so the rename itself survives a power
cut on an SD card). Every writer in train/, convert/, device/ and deploy/ that replaces a file uses it, or
:func:`atomic_write_with` when a library writes into a stream (numpy's savez), or :func:`sync_folder` after a
rename of its own (a folder of files renamed into place).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def sync_folder(folder: os.PathLike) -> None:
    """fsync FOLDER, so that the names created or renamed in it are on disk (a no-op where folders cannot be
    opened, e.g. Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems (a FUSE mount) refuse fsync on a folder: the rename is still atomic
        pass
    finally:
        os.close(descriptor)


def atomic_write_with(path: os.PathLike, write, mode: int | None = 0o644, owner: tuple | None = None) -> Path:
    """Call WRITE(binary stream) on a temporary file beside PATH, fsync it, rename it over PATH, fsync the folder.
    MODE: the new file's permissions (default 0o644: readable by the service's user when root wrote it; None
    keeps mkstemp's 0o600). OWNER: (uid, gid) the new file gets when root writes it (else the writer's).
    A failure removes the temporary file and leaves the old PATH as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            if mode is not None:
                os.fchmod(stream.fileno(), mode)
            if owner is not None and os.geteuid() == 0:
                os.fchown(stream.fileno(), *owner)
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    sync_folder(path.parent)
    return path


def atomic_write(path: os.PathLike, content: bytes | str, mode: int | None = 0o644) -> Path:
    """Replace PATH with CONTENT (text is written as UTF-8) atomically and durably -> PATH."""
    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    return atomic_write_with(path, lambda stream: stream.write(data), mode)
