"""The output interface and the machinery that isolates each output from the inference loop.

An output (a "sink") is a small class with ``open``, ``write_result``, ``write_event``, ``write_status``,
``close`` and ``health``. The daemon never calls its writes directly: each output gets a ``Channel``, a
bounded queue (drop oldest, counted) drained by the output's own worker thread, so a slow or failing
output never delays inference or another output.

An exception that escapes a write turns the output off, once: one error line on stderr (no traceback),
one ``output_failed`` event to the other outputs, and ``state: failed`` with the error in /status.
Outputs that expect passing trouble (a broker restarting, a webhook's server down) retry inside
themselves and only count the error.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger("edgecam.outputs")
EMIT_MODES = ("every", "change", "off")
INTERRUPT_S = 0.2  # at shutdown, how long a write that was asked to give up may take to return


def to_json(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)


class Emitter:
    """Decides which results to write: every one, or only those whose label differs from the last."""

    def __init__(self, mode: str, flag: str = "--emit"):
        if mode not in EMIT_MODES:
            raise ValueError(f"{flag} must be one of {EMIT_MODES}, got {mode!r}")
        self.mode = mode
        self.last_labels: dict = {}  # region (None: the whole frame) -> its last label

    def wants(self, result: dict) -> bool:
        if self.mode == "off":
            return False
        region = result.get("region")
        changed = result["label"] != self.last_labels.get(region)
        self.last_labels[region] = result["label"]
        return self.mode == "every" or changed


@dataclass
class OutputContext:
    """What an output may know about the daemon: the bundle's name and labels, and live status."""

    name: str
    labels: list
    model: str = ""
    status: Callable[[], dict] = dict
    health: Callable[[], tuple] = lambda: (True, None)  # the daemon's healthy(): (bool, reason)
    hub: object = None      # the SSE EventHub
    stdout: object = None   # the stream for JSON lines
    extra: dict = field(default_factory=dict)


class Output:
    """Base class: one backend. Subclasses set ``name`` and override the writes they support."""

    name = "output"
    queue_size = 256      # items waiting for the worker before the oldest are dropped
    takes_events = False  # daemon events (start, reload, failures): only outputs that store a log want them
    takes_status = False  # the daemon's status on each state change (the SSE stream wants it)
    takes_labels = False  # the classifier's labels when they change (a taught head, an undo, a new release)

    def __init__(self, emit: str = "every", flag: str = "--emit"):
        self.emitter = Emitter(emit, flag)
        self.channel: Channel | None = None  # set by the Channel that runs this output

    def count_error(self, error) -> None:
        """Record a passing error this output recovered from (it keeps running)."""
        if self.channel is not None:
            self.channel.count_error(error)

    # called from the inference thread: must be cheap and never block
    def wants(self, result: dict) -> bool:
        return self.emitter.wants(result)

    # called from the output's worker thread
    def open(self, context: OutputContext) -> None:
        """Connect or open files. Raise ValueError (exit 2) for a configuration that cannot work."""

    def write_result(self, result: dict) -> None:
        raise NotImplementedError

    def write_event(self, kind: str, details: dict) -> None:
        pass

    def write_status(self, status: dict) -> None:
        pass

    def write_labels(self, labels: list) -> None:
        pass

    def write_regions(self, regions: list) -> None:
        """The regions served changed ([{"name", "labels"}]; --region, device/regions/serve.py)."""

    def interrupt(self) -> None:
        """Called from another thread at shutdown: make a write that waits (for a broker, a server) give up."""

    def close(self) -> None:
        pass

    def health(self) -> dict:
        """Extra fields for /status, e.g. {"connected": True}."""
        return {}


class Channel:
    """One output's bounded queue and worker thread, with the counters /status and /metrics show."""

    def __init__(self, output: Output, on_failure: Callable[[str, str], None] | None = None):
        self.output = output
        output.channel = self
        self.on_failure = on_failure
        self.items: collections.deque = collections.deque()
        self.condition = threading.Condition()
        self.closing = False
        self.writing = False   # the worker is inside a write (guarded by condition)
        self.abandoned = False # close() gave up waiting: the worker closes the output when its write returns
        self.state = "ok"
        self.written = self.dropped = self.errors = 0
        self.last_error: str | None = None
        self.thread = threading.Thread(target=self._run, name=f"edgecam-output-{output.name}", daemon=True)

    @property
    def name(self) -> str:
        return self.output.name

    def start(self) -> None:
        self.thread.start()

    def offer(self, kind: str, payload) -> None:
        """Queue a write without blocking; a full queue drops its oldest item (counted), never the labels."""
        if self.state == "failed" or self.closing:
            return
        with self.condition:
            if kind == "labels":  # only the newest labels matter; a result never pushes them out
                self.items = collections.deque(item for item in self.items if item[0] != "labels")
            if len(self.items) >= self.output.queue_size:
                oldest = next((index for index, item in enumerate(self.items) if item[0] != "labels"), None)
                self.dropped += 1
                if oldest is None:  # a queue of one that holds the labels: this write is the one dropped
                    return
                del self.items[oldest]
            self.items.append((kind, payload))
            self.condition.notify()

    def _run(self) -> None:
        writes = {"result": self.output.write_result, "event": lambda item: self.output.write_event(*item),
                  "status": self.output.write_status, "labels": self.output.write_labels,
                  "regions": self.output.write_regions}
        while True:
            with self.condition:
                while not self.items and not self.closing:
                    self.condition.wait()
                if not self.items or self.abandoned:
                    return
                kind, payload = self.items.popleft()
                self.writing = True
            try:
                writes[kind](payload)
                if kind == "result":
                    self.written += 1
            except Exception as error:  # noqa: BLE001 - an output's failure must never reach inference
                with self.condition:
                    self.writing = False
                    abandoned = self.abandoned
                if abandoned:  # shutting down: the error came from giving up, not from the output
                    self.close_output()
                else:
                    self.fail(error)
                return
            with self.condition:
                self.writing = False
                abandoned = self.abandoned
            if abandoned:
                self.close_output()
                return

    def count_error(self, error) -> None:
        """A passing error the output recovered from (it keeps running)."""
        self.errors += 1
        self.last_error = str(error)

    def fail(self, error) -> None:
        text = f"{type(error).__name__}: {error}" if not isinstance(error, OSError) or not error.strerror \
            else f"{error.strerror} ({getattr(error, 'filename', None) or type(error).__name__})"
        self.errors += 1
        self.last_error = text
        self.state = "failed"
        with self.condition:
            self.dropped += len(self.items)
            self.items.clear()
        log.error("output %s failed and is now off (%s); inference and the other outputs go on",
                  self.name, text)
        try:
            self.output.close()
        except Exception:  # noqa: BLE001 - already failed; closing is best effort
            pass
        if self.on_failure is not None:
            self.on_failure(self.name, text)

    def close(self, deadline: float) -> None:
        """Let the worker drain what is queued until ``deadline`` (time.monotonic), then close the output.
        An output is never closed while its worker is inside a write: past the deadline the write is asked to
        give up (``interrupt``) and what is still queued is dropped; a write that goes on regardless closes
        the output itself when it returns (the worker is a daemon thread: it never holds up the exit)."""
        with self.condition:
            self.closing = True
            self.condition.notify()
        if self.thread.is_alive():
            self.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self.thread.is_alive():
            with self.condition:
                self.dropped += len(self.items)
                self.items.clear()
            try:
                self.output.interrupt()
            except Exception:  # noqa: BLE001 - shutdown goes on
                pass
            self.thread.join(timeout=INTERRUPT_S)
        with self.condition:
            if self.writing:
                self.abandoned = True
                return
            self.abandoned = True  # a worker that wakes up now returns without writing
        self.close_output()

    def close_output(self) -> None:
        if self.state == "failed":
            return
        try:
            self.output.close()
        except Exception as error:  # noqa: BLE001 - shutdown goes on
            log.warning("output %s did not close cleanly: %s", self.name, error)
        self.state = "closed"

    def describe(self) -> dict:
        health = {"connected": None}
        try:
            health.update(self.output.health())
        except Exception as error:  # noqa: BLE001 - /status must always answer
            health["health_error"] = str(error)
        return {"state": self.state, **health, "written": self.written, "dropped": self.dropped,
                "errors": self.errors, "last_error": self.last_error, "queued": len(self.items)}
