"""Result sinks: JSON lines on stdout and an optional rotating log file.

``--emit every`` writes one line per frame, ``change`` one line each time the label changes, ``off``
nothing (the HTTP API still has every result). The log file gets result lines (``--log-emit``, label
changes by default, to spare a Pi's SD card) plus the daemon's own events (start, reload, source
failures, warnings) as JSON lines, and rotates at ``--log-max-bytes``.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys

EMIT_MODES = ("every", "change", "off")


def to_json(result: dict) -> str:
    return json.dumps(result, separators=(",", ":"), allow_nan=False)


class Emitter:
    """Decides which results to write: every one, or only those whose label differs from the last."""

    def __init__(self, mode: str):
        if mode not in EMIT_MODES:
            raise ValueError(f"--emit must be one of {EMIT_MODES}, got {mode!r}")
        self.mode = mode
        self.last_label: str | None = None

    def wants(self, result: dict) -> bool:
        if self.mode == "off":
            return False
        changed = result["label"] != self.last_label
        self.last_label = result["label"]
        return self.mode == "every" or changed


class StdoutSink:
    def __init__(self, mode: str = "every", stream=None):
        self.emitter = Emitter(mode)
        self.stream = stream or sys.stdout

    def write(self, result: dict) -> None:
        if self.emitter.wants(result):
            try:
                self.stream.write(to_json(result) + "\n")
                self.stream.flush()
            except (BrokenPipeError, ValueError):  # the reader went away; keep running for HTTP clients
                self.emitter.mode = "off"

    def close(self) -> None:
        try:
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass


class LogFileSink:
    """Result lines and daemon events in a size-rotated file (``backups`` old files kept)."""

    def __init__(self, path: str, max_bytes: int, backups: int = 3, mode: str = "every"):
        self.emitter = Emitter(mode)
        self.handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups,
                                                            encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(message)s"))

    def write(self, result: dict) -> None:
        if self.emitter.wants(result):
            self.handler.emit(logging.makeLogRecord({"msg": to_json(result), "levelno": logging.INFO}))

    def event(self, kind: str, **details) -> None:
        line = to_json({"event": kind, **details})
        self.handler.emit(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))

    def close(self) -> None:
        self.handler.flush()
        self.handler.close()
