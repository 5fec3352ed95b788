"""Result lines (``--log-emit``, label changes by default, to spare a Pi's SD card) and the daemon's own
events (start, reload, source failures, warnings) as JSON lines in a file that rotates at
``--log-max-bytes`` (``--log-backups`` old files kept).

A write that fails (a full disk, a removed USB stick) raises: the Channel turns this output off once,
with one error line and one event, and the daemon carries on.
"""

from __future__ import annotations

import os

from device.outputs.base import Output, to_json


class LogFileOutput(Output):
    name = "logfile"
    takes_events = True
    queue_size = 512

    def __init__(self, path: str, max_bytes: int, backups: int = 3, mode: str = "change"):
        super().__init__(mode, "--log-emit")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.stream = None

    @classmethod
    def configure(cls, options):
        if not options.log_file:
            return None
        return cls(options.log_file, options.log_max_bytes, options.log_backups, options.log_emit)

    def open(self, context=None) -> None:
        try:
            self.stream = open(self.path, "a", encoding="utf-8")
        except OSError as error:
            raise ValueError(f"--log-file {self.path} cannot be opened ({error.strerror}): "
                             "create its folder or make it writable for this user.") from None

    def write_result(self, result: dict) -> None:
        self.write_line(to_json(result))

    def write_event(self, kind: str, details: dict) -> None:
        self.write_line(to_json({"event": kind, **details}))

    def write_line(self, line: str) -> None:
        if self.stream is None:
            return
        if self.max_bytes and os.path.isfile(self.path) and self.stream.tell() + len(line) + 1 > self.max_bytes:
            self.rotate()
        self.stream.write(line + "\n")
        self.stream.flush()

    def rotate(self) -> None:
        """edgecam.log -> edgecam.log.1 -> ... -> edgecam.log.N (the oldest is removed)."""
        self.stream.close()
        for index in range(self.backups - 1, 0, -1):
            older = f"{self.path}.{index}"
            if os.path.exists(older):
                os.replace(older, f"{self.path}.{index + 1}")
        if self.backups > 0:
            os.replace(self.path, f"{self.path}.1")
        else:
            os.remove(self.path)
        self.stream = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                stream.close()  # flushes; a full disk here is already counted
            except OSError:
                pass

    def health(self) -> dict:
        return {"path": self.path}


OUTPUT = LogFileOutput
