"""Where results go: one registry of outputs ("sinks"), each a small module with a class of the same shape.

    stdout   JSON lines on stdout (--emit)                     device/outputs/stdout.py
    logfile  rotating JSON-lines log file (--log-file)         device/outputs/logfile.py
    sse      the HTTP API's /events stream                     device/outputs/sse.py
    mqtt     MQTT + Home Assistant discovery (--mqtt)          device/outputs/mqtt.py   (paho-mqtt, lazily)
    webhook  HTTP POST on label change (--webhook)             device/outputs/webhook.py

Each module's class has ``configure(options) -> Output | None`` (None when its flags leave it off). A
backend that fails to import is logged and skipped, never fatal (as frigate's detectors). Adding an
output is one new module and one line in OUTPUTS. Optional libraries are imported inside the backend,
only when it is switched on. The daemon talks to the ``Outputs`` object only.
"""

from __future__ import annotations

import importlib
import logging
import time

from device.outputs.base import EMIT_MODES, Channel, Emitter, Output, OutputContext, to_json

__all__ = ["EMIT_MODES", "OUTPUTS", "Channel", "Emitter", "Output", "OutputContext", "Outputs", "open_outputs",
           "to_json"]
log = logging.getLogger("edgecam.outputs")
OUTPUTS = ("stdout", "logfile", "sse", "mqtt", "webhook")  # module names under device/outputs/, in write order
CLOSE_S = 1.0  # shutdown waits at most this long for all outputs to drain (SIGTERM must finish within 2 s)


def backend(name: str):
    """The Output class of one registry entry (its module imported on first use)."""
    module = importlib.import_module(f"device.outputs.{name}")
    return module.OUTPUT


def configure(options) -> list:
    """Output objects for the daemon's options, in registry order; broken backends are logged and skipped."""
    outputs = []
    for name in OUTPUTS:
        try:
            kind = backend(name)
        except Exception as error:  # noqa: BLE001 - one broken backend must not stop the others
            log.warning("output %s is unavailable (%s: %s); running without it", name, type(error).__name__, error)
            continue
        output = kind.configure(options)
        if output is not None:
            outputs.append(output)
    return outputs


class Outputs:
    """The daemon's outputs: fan each result, event and status out to every channel, without blocking."""

    def __init__(self, channels: list):
        self.channels = channels

    def result(self, result: dict) -> None:
        for channel in self.channels:
            if channel.state == "ok" and channel.output.wants(result):
                channel.offer("result", result)

    def event(self, kind: str, details: dict) -> None:
        for channel in self.channels:
            if channel.output.takes_events:
                channel.offer("event", (kind, details))

    def status(self, status: dict) -> None:
        for channel in self.channels:
            if channel.output.takes_status:
                channel.offer("status", status)

    def labels(self, labels: list) -> None:
        """The classifier's labels, after a reload (outputs that announce them compare and follow)."""
        for channel in self.channels:
            if channel.output.takes_labels:
                channel.offer("labels", list(labels))

    def regions(self, regions: list) -> None:
        """The regions and their labels, after a reload (outputs that announce them compare and follow)."""
        for channel in self.channels:
            if channel.output.takes_labels:
                channel.offer("regions", list(regions))

    def describe(self) -> dict:
        return {channel.name: channel.describe() for channel in self.channels}

    def close(self, seconds: float = CLOSE_S) -> None:
        deadline = time.monotonic() + seconds
        for channel in self.channels:
            channel.close(deadline)

    def failed(self, name: str, error: str) -> None:
        self.event("output_failed", {"time": round(time.time(), 3), "output": name, "error": error})


def open_outputs(outputs: list, context: OutputContext) -> Outputs:
    """Open every output (a ValueError from one closes those already open and propagates), then start
    their worker threads."""
    opened: list = []
    try:
        for output in outputs:
            output.open(context)
            opened.append(output)
    except BaseException:
        for output in reversed(opened):
            try:
                output.close()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
        raise
    hub = Outputs([])
    hub.channels = [Channel(output, on_failure=hub.failed) for output in outputs]
    for channel in hub.channels:
        channel.start()
    return hub
