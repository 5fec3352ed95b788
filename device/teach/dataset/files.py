"""How a frame gets its name without ever taking another's: a complete file linked to a new name, and a
rename that never replaces (the moves, deletes and restores of the bulk edits)."""

from __future__ import annotations

import ctypes
import errno
import functools
import io
import os
import threading
from pathlib import Path

JPEG_QUALITY = 90
AT_FDCWD = -100
RENAME_NOREPLACE = 1  # linux/fs.h


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


@functools.lru_cache(maxsize=1)
def _renameat2():
    """The C library's renameat2, or None (a C library older than glibc 2.28 has none)."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def rename_new(source: Path, target: Path) -> bool:
    """Rename SOURCE (a file, a link as the link itself, or a folder) to TARGET in one atomic step unless
    TARGET exists -> False, nothing replaced. Where the kernel or file system lacks RENAME_NOREPLACE, the
    name is looked at first and then renamed: the callers hold the data set's edit lock, so only a capture
    writer's brand-new frame could take the name in between (it picks names by the second and a sequence)."""
    function = _renameat2()
    if function is not None:
        if function(AT_FDCWD, os.fsencode(source), AT_FDCWD, os.fsencode(target), RENAME_NOREPLACE) == 0:
            return True
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            return False
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(code, os.strerror(code), str(source), None, str(target))
    if os.path.lexists(target):
        return False
    os.rename(source, target)
    return True
