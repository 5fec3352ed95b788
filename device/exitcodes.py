"""The exit codes every edgecam command keeps (docs/reference.md: Exit codes), and the one place that maps an error to them.

    0  OK         done as asked (teach: the new head was accepted)
    1  FAILED     a check failed: parity (convert), quality (teach refused a worse head), the device (doctor),
                  frames that keep failing (the daemon: systemd restarts it)
    2  BAD_INPUT  bad input or configuration, a full disk, a permission: a person must act; a retry will not help
    3  RETRY      a temporary condition worth a retry: a port in use, a bundle locked by another command, a
                  camera busy or unplugged

Each command handles the errors it expects and says what to do; :func:`run` wraps every entry point so that
an OSError that still escapes (a disk filling up between two checks, a folder made read-only) ends in one
line that says what happened and a code from the contract, not in a traceback and Python's 1 (which would
read as "a check failed"). Ctrl-C gives 130, as a shell does. Any other exception is a bug: its traceback is
printed and the code is 1 (systemd restarts the daemon). Standard library only: device/ stays lean, and the
host commands (train, convert) import it from here.
"""

from __future__ import annotations

import errno
import sys

OK, FAILED, BAD_INPUT, RETRY = 0, 1, 2, 3
INTERRUPTED = 130

# What passes by itself: something else holds the device, the lock or the port for now.
TEMPORARY_ERRNOS = frozenset({errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ETIMEDOUT,
                              errno.EADDRINUSE, errno.ETXTBSY, errno.ENOLCK})
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def code_for(error: BaseException) -> int:
    """The exit code for an error that ends a command: RETRY for a temporary OSError, else BAD_INPUT."""
    if isinstance(error, OSError) and error.errno in TEMPORARY_ERRNOS:
        return RETRY
    return BAD_INPUT


def describe(error: OSError, place: str | None = None) -> str:
    """One line for an OSError: what happened, where (its file, else PLACE), and what to do next."""
    where = error.filename if error.filename is not None else place or "a file"
    reason = error.strerror or str(error)
    if error.errno in FULL_ERRNOS:
        return (f"the disk is full: writing {where} failed ({reason}). Free some space (or point the "
                "command at another disk), then run it again.")
    if error.errno in (errno.EACCES, errno.EPERM):
        return (f"{where}: permission denied. Run as a user that may use it (the daemon's user on a device), or "
                "change its owner or mode.")
    if error.errno == errno.EROFS:
        return f"{where} is on a read-only file system: pick a writable folder."
    if error.errno == errno.ENOTDIR:
        return f"{where}: a part of this path is a file, not a folder: pick another path."
    if error.errno == errno.ENOENT:
        return f"{where} does not exist: check the path."
    if error.errno in TEMPORARY_ERRNOS:
        return f"{where}: {reason}; try again in a moment."
    return f"{where}: {reason}."


def fail(program: str, message: str, code: int) -> int:
    """Print ``PROGRAM: MESSAGE`` on stderr -> CODE (for ``return fail(...)``)."""
    print(f"{program}: {message}", file=sys.stderr, flush=True)
    return code


def run(main, argv: list | None = None, program: str = "edgecam") -> int:
    """MAIN(ARGV) -> its exit code; an OSError or Ctrl-C that escapes it becomes a message and a code from the
    contract."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        return fail(program, "interrupted.", INTERRUPTED)
    except OSError as error:
        return fail(program, describe(error), code_for(error))
