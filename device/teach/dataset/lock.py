"""The data set's edit lock: one edit (move, delete, restore, a class renamed or deleted, the purge of the
old undo) at a time, across the threads of this process and across processes (the daemon's HTTP and
``python -m device dataset`` in a shell). It is an flock(2) on the data-set folder itself (no lock file to
leave behind); the kernel lets it go when the holder dies. Re-entrant within one thread."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path


class EditLock:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.threads = threading.RLock()
        self.depth = 0
        self.descriptor: int | None = None

    def __enter__(self):
        self.threads.acquire()
        try:
            if self.depth == 0:
                descriptor = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX)
                except BaseException:
                    os.close(descriptor)
                    raise
                self.descriptor = descriptor
            self.depth += 1
        except BaseException:
            self.threads.release()
            raise
        return self

    def __exit__(self, kind, error, traceback):
        self.depth -= 1
        if self.depth == 0:
            os.close(self.descriptor)  # closing the only descriptor releases the flock
            self.descriptor = None
        self.threads.release()
        return False
