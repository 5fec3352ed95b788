"""The HTTP API's one error-to-status map: every exception a request meets becomes (status, one short line).

    400  bad input: a bad name or path, a file name too long for the file system, JSON nested too deep
    404  the class, file or uncertain frame does not exist
    409  busy: teaching already runs, the bundle is locked by another command, nothing to undo, refused
    429  too fast (--capture-fps)
    503  no camera frame yet
    507  recording stopped: the data set's limit, the disk's free-space floor, or the disk itself is full
    500  anything else

The message is one line of at most ``MAX_MESSAGE`` characters and names no absolute path (a path says where
the device keeps its files; the answer only needs what happened and what to do). device/server.py answers
with it for any endpoint; device/teach/http.py for the Teach API.
"""

from __future__ import annotations

import errno
import re

from device.teach.dataset import DatasetError, DatasetFull
from device.teach.service import NoFrame, RateLimited, TeachBusy, TeachFailed, TeachRefused, TeachStorage

MAX_MESSAGE = 300
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"():,]+/){2,}([^\s/'\"():,]*)")
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
BAD_NAME_ERRNOS = {errno.ENAMETOOLONG, errno.ELOOP, errno.EINVAL}
GONE = ("does not exist", "is gone", "not in the ring")


class HttpError(Exception):
    """An answer decided where the request is read (a bad body, a foreign Origin): its status and message."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def one_line(text: str) -> str:
    """TEXT as one short line: absolute paths shortened to their last name, the first and last lines kept."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if not lines:
        return "the request failed"
    line = lines[0] if len(lines) == 1 else f"{lines[0]} … {lines[-1]}"
    line = ABSOLUTE_PATH.sub(lambda match: match.group(1) or "a folder", line)
    return line if len(line) <= MAX_MESSAGE else line[:MAX_MESSAGE - 1] + "…"


def status_for(error: BaseException) -> tuple:
    """-> (HTTP status, one-line message) for ERROR."""
    if isinstance(error, HttpError):
        return error.code, one_line(str(error))
    if isinstance(error, RecursionError):
        return 400, "the JSON body is nested too deeply: send a flat object such as {\"label\": \"paper\"}."
    if isinstance(error, RateLimited):
        return 429, one_line(str(error))
    if isinstance(error, DatasetFull):
        return 507, one_line(f"recording stopped: {error}")
    if isinstance(error, NoFrame):
        return 503, one_line(str(error))
    if isinstance(error, (TeachBusy, TeachRefused)):
        return 409, one_line(str(error))
    if isinstance(error, TeachStorage):  # the state folder read-only, not the service's, or full: a person must act
        return 507, one_line(str(error))
    if isinstance(error, TeachFailed):
        return 500, one_line(str(error))
    if isinstance(error, OSError) and error.errno in FULL_ERRNOS:
        return 507, ("recording stopped: the disk is full or read-only "
                     f"({error.strerror or 'no space'}): free some space or pull the data set, then try again.")
    if isinstance(error, OSError) and error.errno in BAD_NAME_ERRNOS:
        return 400, f"that file name cannot be used ({error.strerror}): use a path from /api/dataset."
    if isinstance(error, DatasetError):
        return (404 if any(word in str(error) for word in GONE) else 400), one_line(str(error))
    if isinstance(error, OSError):
        return 500, f"the device could not read or write a file ({error.strerror or type(error).__name__})."
    return 500, one_line(f"{type(error).__name__}: {error}" if not str(error) else str(error))
