"""The capture writer: one owner of file names in every process that records. An image is written complete
under a temporary name, then linked to its final name, and a link never replaces a file: a name another
writer took meanwhile is skipped for the next number, so no frame overwrites another, and a killed writer
leaves no half file. ``index.jsonl`` takes each record in one append."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

from device.teach.dataset.errors import DatasetError, DatasetFull, disk_full
from device.teach.dataset.files import encode_jpeg, link_new, write_temporary
from device.teach.dataset.space import INDEX

NAME_TRIES = 10_000  # numbers tried for one second's frames before giving up (never reached in practice)


class Writer:
    """Mixed into Dataset: needs root, lock, sequence, bytes, index_size, frame_bytes and the Space and
    Classes methods."""

    def _new_name(self, now: float) -> str:
        self.sequence += 1
        return f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{self.sequence:04d}.jpg"

    def _place(self, source: Path, folder: Path, now: float, preferred: str | None = None) -> str:
        """Link the complete file SOURCE into FOLDER under PREFERRED, or else a new name, that no writer has
        taken -> that name. SOURCE stays (the caller removes it)."""
        if preferred and link_new(source, folder / preferred):
            return preferred
        for _ in range(NAME_TRIES):
            name = self._new_name(now)
            if link_new(source, folder / name):
                return name
        raise DatasetError(f"{folder} has no free frame name for {time.ctime(now)} after {NAME_TRIES} tries: "
                           "check the folder and the clock.")

    def _write_new(self, folder: Path, content: bytes, now: float) -> str:
        """CONTENT as a new frame in FOLDER -> its file name (never an existing one's)."""
        temporary = write_temporary(folder, content)
        try:
            return self._place(temporary, folder, now)
        finally:
            temporary.unlink(missing_ok=True)

    def save(self, frame, label: str, source: str = "", model: str = "", reading: dict | None = None) -> tuple:
        """Write FRAME (RGB uint8) into class LABEL -> (relative file, that class's count). Raises DatasetError
        for an unknown class, DatasetFull when recording must stop."""
        self.require_class(label)
        content = encode_jpeg(frame)
        with self.lock:
            self.frame_bytes = len(content)
            self._follow_other_writers()
            reason = self.blocked(len(content))
            if reason:
                raise DatasetFull(reason)
            now = time.time()
            with disk_full(self.root):
                relative = f"{label}/{self._write_new(self.root / label, content, now)}"
                try:
                    self._index({"file": relative, "label": label, "time": round(now, 3), "source": source,
                                 "model": model, "reading": reading})
                except BaseException:  # a frame is kept only with its index line: what is reported is what is there
                    (self.root / relative).unlink(missing_ok=True)
                    raise
            self.bytes += len(content)
            return relative, self.count(label)

    def _index(self, record: dict) -> None:
        """One append of one whole line: lines of writers in other processes never interleave with it."""
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
        descriptor = os.open(self.root / INDEX, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(descriptor, line)
            size = os.fstat(descriptor).st_size
            if written != len(line):  # the disk filled up mid-line: take the torn part back, keep whole lines
                end = os.lseek(descriptor, 0, os.SEEK_CUR)
                if size == end:  # nobody appended after it
                    os.ftruncate(descriptor, end - written)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.root / INDEX))
        finally:
            os.close(descriptor)
        if size == self.index_size + len(line):
            self.index_size = size  # only this writer wrote since the last look: the count is still right
