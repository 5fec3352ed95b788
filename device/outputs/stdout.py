"""JSON lines on stdout: every frame, only when the label changes, or off (``--emit``)."""

from __future__ import annotations

import sys

from device.outputs.base import Output, to_json


class StdoutOutput(Output):
    name = "stdout"
    queue_size = 1024  # a pipe reader that falls this far behind loses its oldest lines (counted)

    def __init__(self, mode: str = "every", stream=None):
        super().__init__(mode, "--emit")
        self.stream = stream

    @classmethod
    def configure(cls, options):
        return cls(options.emit, getattr(options, "stdout", None))

    def open(self, context) -> None:
        self.stream = self.stream or context.stdout or sys.stdout

    def write_result(self, result: dict) -> None:
        try:
            self.stream.write(to_json(result) + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):  # the reader went away; keep running for HTTP clients
            self.emitter.mode = "off"

    # no close(): every line is flushed as it is written, and a flush here could hang on a reader that
    # stopped reading (the worker thread, a daemon thread, is left behind instead)
    def close(self) -> None:
        pass


OUTPUT = StdoutOutput
