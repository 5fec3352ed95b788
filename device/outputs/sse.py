"""The HTTP API's Server-Sent Events stream (/events): every result and each status change.

The EventHub (device/http/server.py) keeps one bounded queue per browser; this output only feeds it."""

from __future__ import annotations

from device.outputs.base import Output


class SseOutput(Output):
    name = "sse"
    queue_size = 64
    takes_events = True  # only output_failed is passed on (the kiosk shows it)
    takes_status = True

    def __init__(self):
        super().__init__("every")
        self.hub = None

    @classmethod
    def configure(cls, options):
        return None if options.http == "off" else cls()

    def open(self, context) -> None:
        self.hub = context.hub

    def write_result(self, result: dict) -> None:
        self.hub.publish("result", result)

    def write_event(self, kind: str, details: dict) -> None:
        if kind == "output_failed":
            self.hub.publish(kind, details)

    def write_status(self, status: dict) -> None:
        self.hub.publish("status", status)

    def health(self) -> dict:
        return {"clients": len(self.hub.clients) if self.hub is not None else 0}


OUTPUT = SseOutput
