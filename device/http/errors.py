"""The HTTP API's one error-to-status map: every exception a request meets becomes (status, one short line).

    400  bad input: a bad name or path, a file name too long for the file system, JSON nested too deep
    404  the class, file or uncertain frame does not exist
    409  busy: teaching already runs, the bundle is locked by another command, nothing to undo, refused
    429  too fast (--capture-fps)
    503  no camera frame yet
    507  recording stopped: the data set's limit, the disk's free-space floor, or the disk itself is full
    500  anything else

The errors of an optional part (the Teach API's busy, refused, full, ...) are registered on the server's
:class:`ErrorMap` by that part (device/teach/http.py), so this module imports none of them.

The message is one line of at most ``MAX_MESSAGE`` characters and names no absolute path (a path says where
the device keeps its files; the answer only needs what happened and what to do). device/http/server.py answers
with it for any endpoint; device/teach/http.py for the Teach API.
"""

from __future__ import annotations

import errno
import re

MAX_MESSAGE = 300
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"():,]+/){2,}([^\s/'\"():,]*)")
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
BAD_NAME_ERRNOS = {errno.ENAMETOOLONG, errno.ELOOP, errno.EINVAL}


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


class ErrorMap:
    """The server's one error-to-status map: its own answers, then what the parts registered (first match wins)."""

    def __init__(self):
        self.registered: list = []

    def register(self, kind, answer) -> None:
        """Answer an exception of KIND (a class or tuple of classes) with ANSWER: a status (the message is the
        error's own text, as one line), or a function ``error -> (status, message)``."""
        self.registered.append((kind, answer))

    def status_for(self, error: BaseException) -> tuple:
        return status_for(error, self.registered)


def status_for(error: BaseException, registered=()) -> tuple:
    """-> (HTTP status, one-line message) for ERROR; REGISTERED: (kind, answer) pairs, see :class:`ErrorMap`."""
    if isinstance(error, HttpError):
        return error.code, one_line(str(error))
    if isinstance(error, RecursionError):
        return 400, "the JSON body is nested too deeply: send a flat object such as {\"label\": \"paper\"}."
    for kind, answer in registered:
        if isinstance(error, kind):
            return answer(error) if callable(answer) else (answer, one_line(str(error)))
    if isinstance(error, OSError) and error.errno in FULL_ERRNOS:
        return 507, ("recording stopped: the disk is full or read-only "
                     f"({error.strerror or 'no space'}): free some space or pull the data set, then try again.")
    if isinstance(error, OSError) and error.errno in BAD_NAME_ERRNOS:
        return 400, f"that file name cannot be used ({error.strerror}): use a path from /api/dataset."
    if isinstance(error, OSError):
        return 500, f"the device could not read or write a file ({error.strerror or type(error).__name__})."
    return 500, one_line(f"{type(error).__name__}: {error}" if not str(error) else str(error))
