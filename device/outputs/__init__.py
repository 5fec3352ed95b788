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

An output never takes the camera down: one its settings switch on that cannot run here (paho-mqtt not
installed, a malformed URL, a broker refusing the credentials, a log folder that cannot be written) is
``Disabled``: one log line with the reason and its fix, ``state: disabled`` and the reason in /status
(``edgecam_output_up 0`` in /metrics), an ``outputs`` warning in ``python -m device doctor``, and the daemon
serves without it. Exit 2 stays for what makes serving impossible (the bundle, the source, --http/--token).
"""

from __future__ import annotations

import importlib
import logging
import time

from device.outputs.base import EMIT_MODES, Channel, Emitter, Output, OutputContext, to_json

__all__ = ["EMIT_MODES", "OUTPUTS", "Channel", "Disabled", "Emitter", "Output", "OutputContext", "Outputs",
           "check_settings", "open_outputs", "to_json"]
log = logging.getLogger("edgecam.outputs")
OUTPUTS = ("stdout", "logfile", "sse", "mqtt", "webhook")  # module names under device/outputs/, in write order
NETWORK = ("mqtt", "webhook")  # the outputs doctor checks from the service's settings
CLOSE_S = 1.0  # shutdown waits at most this long for all outputs to drain (SIGTERM must finish within 2 s)


def backend(name: str):
    """The Output class of one registry entry (its module imported on first use)."""
    module = importlib.import_module(f"device.outputs.{name}")
    return module.OUTPUT


class Disabled:
    """An output its settings switch on that cannot run here: it stays off, with the reason (and its fix)."""

    def __init__(self, name: str, error: BaseException | str):
        self.name = name
        self.reason = error if isinstance(error, str) else reason(error)

    def describe(self) -> dict:
        return {"state": "disabled", "reason": self.reason, "connected": None}

    def announce(self) -> "Disabled":
        log.error("output %s is disabled: %s (the camera goes on without it)", self.name, self.reason)
        return self


def reason(error: BaseException) -> str:
    """A ValueError already says what to do; anything else gets its type named."""
    if isinstance(error, ValueError):
        return str(error)
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror} ({error.filename or type(error).__name__})"
    return f"{type(error).__name__}: {error}"


def configure_one(name: str, options):
    """The Output (or Disabled, or None when its flags leave it off) of one registry entry."""
    try:
        kind = backend(name)
    except Exception as error:  # noqa: BLE001 - one broken backend must not stop the others
        log.warning("output %s is unavailable (%s: %s); running without it", name, type(error).__name__, error)
        return None
    try:
        return kind.configure(options)
    except Exception as error:  # noqa: BLE001 - an output's setting never stops the camera
        return Disabled(name, error)


def configure(options) -> list:
    """Output objects for the daemon's options, in registry order (Disabled ones among them, not yet logged:
    open_outputs says so); broken backends are logged and skipped."""
    return [output for output in (configure_one(name, options) for name in OUTPUTS) if output is not None]


def check_settings(settings) -> tuple:
    """-> (names of the network outputs SETTINGS switch on, {name: why it would be disabled}): for doctor."""
    from types import SimpleNamespace

    options = SimpleNamespace(outputs=settings, http="off", max_fps=0.0)
    chosen = [output for output in (configure_one(name, options) for name in NETWORK) if output is not None]
    return [output.name for output in chosen], {o.name: o.reason for o in chosen if isinstance(o, Disabled)}


class Outputs:
    """The daemon's outputs: fan each result, event and status out to every channel, without blocking."""

    def __init__(self, channels: list, disabled: list | None = None):
        self.channels = channels
        self.disabled = list(disabled or [])  # Disabled outputs: only /status and /metrics show them

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
        described = {channel.name: channel.describe() for channel in self.channels}
        described.update((output.name, output.describe()) for output in self.disabled)
        return described

    def close(self, seconds: float = CLOSE_S) -> None:
        deadline = time.monotonic() + seconds
        for channel in self.channels:
            channel.close(deadline)

    def failed(self, name: str, error: str) -> None:
        self.event("output_failed", {"time": round(time.time(), 3), "output": name, "error": error})


def open_outputs(outputs: list, context: OutputContext) -> Outputs:
    """Open every output, then start their worker threads. One that cannot open (a ValueError: a bad setting;
    an ImportError, an OSError) is Disabled, logged, and the others go on."""
    opened: list = []
    disabled: list = []
    for output in outputs:
        if isinstance(output, Disabled):
            disabled.append(output.announce())
            continue
        try:
            output.open(context)
            opened.append(output)
        except Exception as error:  # noqa: BLE001 - an output never takes the camera down
            try:
                output.close()
            except Exception:  # noqa: BLE001 - the open's error is the one to report
                pass
            disabled.append(Disabled(output.name, error).announce())
    hub = Outputs([], disabled)
    hub.channels = [Channel(output, on_failure=hub.failed) for output in opened]
    for channel in hub.channels:
        channel.start()
    return hub
