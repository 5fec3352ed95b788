"""The frame pipeline: a capture thread feeding a one-slot holder, and the per-frame classification.

- :class:`FrameSlot` holds at most one frame. A live source overwrites it (the stale frame is dropped
  and counted); a replay (image folder, video file) waits for the slot to empty, so every frame is
  classified in order. Memory is bounded either way.
- :class:`Capture` reads the source in its own thread and retries failures with exponential backoff
  (0.1 s doubling to 5 s), reporting its state (ok / degraded / ended) instead of exiting or spinning.
- :class:`Classifier` is one loaded model with its preprocessing plan and smoother: ``process(frame)``
  -> result dict. A reload builds a new one and swaps it in whole.
- :class:`Stats` keeps frame counts, fps and latency percentiles in bounded buffers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

import numpy as np

from device import postprocess, preprocess
from device.sources import EndOfStream, Source, SourceConfigError

log = logging.getLogger("edgecam.pipeline")
BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 5.0


class FrameSlot:
    """A one-frame holder between the capture thread and the inference loop."""

    def __init__(self):
        self.condition = threading.Condition()
        self.frame = None
        self.item = None
        self.sequence = 0
        self.dropped = 0
        self.closed = False  # no more frames will come (a replay ended, or shutdown)

    def put(self, frame, wait: bool = False, stop: threading.Event | None = None, item: str | None = None) -> None:
        """Store the newest frame (``item`` names where it came from, e.g. the replayed file)."""
        with self.condition:
            if wait:
                while self.frame is not None and not self.closed and not (stop and stop.is_set()):
                    self.condition.wait(0.1)
            if self.frame is not None:
                self.dropped += 1
            self.frame = frame
            self.item = item
            self.sequence += 1
            self.condition.notify_all()

    def get(self, timeout: float) -> np.ndarray | None:
        """The newest frame, or None after ``timeout`` seconds (or at once when closed and empty)."""
        return self.get_item(timeout)[0]

    def get_item(self, timeout: float) -> tuple:
        """(newest frame, its item name), or (None, None) after ``timeout`` seconds."""
        with self.condition:
            if self.frame is None and not self.closed:
                self.condition.wait(timeout)
            frame, self.frame = self.frame, None
            item, self.item = self.item, None
            self.condition.notify_all()
            return frame, item

    def close(self) -> None:
        with self.condition:
            self.closed = True
            self.condition.notify_all()


class Capture(threading.Thread):
    """Reads ``make_source()`` into ``slot`` until stopped. Failures are retried with backoff."""

    def __init__(self, make_source: Callable[[], Source], slot: FrameSlot, once: bool = False,
                 on_change: Callable[[], None] | None = None):
        super().__init__(name="edgecam-capture", daemon=True)
        self.make_source = make_source
        self.slot = slot
        self.once = once
        self.on_change = on_change or (lambda: None)
        self.stopping = threading.Event()
        self.state = "starting"
        self.error: str | None = None
        self.retries = 0
        self.frames = 0
        self.fatal: Exception | None = None
        self.source: Source | None = None
        self.last_frame: np.ndarray | None = None
        self.record_lock = threading.Lock()  # one frame to record asked for at a time
        self.record_wanted = threading.Event()
        self.record_ready = threading.Event()
        self.record: np.ndarray | None = None
        self.full_frames = False  # read the source's whole frame (read_full: the Pi camera's main stream; regions)

    def describe(self) -> dict:
        return {"state": self.state, "error": self.error, "retries": self.retries, "frames": self.frames,
                "skipped": self.skipped()}

    def skipped(self) -> dict:
        """Frames the source skipped, by reason (files too large, corrupt, ...); {} for sources that never skip."""
        return dict(getattr(self.source, "skipped", None) or {})

    def set_state(self, state: str, error: str | None = None) -> None:
        changed = (state, error) != (self.state, self.error)
        self.state, self.error = state, error
        if changed:
            self.on_change()

    def run(self) -> None:
        backoff = BACKOFF_START_S
        while not self.stopping.is_set():
            source = None
            try:
                # one source object for the whole run: a reopen keeps its replay position and counters
                source = self.source = self.source or self.make_source()
                source.open()
                while not self.stopping.is_set():
                    frame = source.read_full() if self.full_frames else source.read()
                    self.frames += 1
                    self.last_frame = frame
                    if self.record_wanted.is_set():
                        self.read_record(source, frame)
                    item = getattr(source, "current", None)
                    self.slot.put(frame, wait=not source.live, stop=self.stopping,
                                  item=str(item) if item is not None else None)
                    if self.state != "ok":
                        self.set_state("ok")
                    backoff = BACKOFF_START_S
            except EndOfStream as end:
                if self.once and self.frames == 0:  # a --once replay that delivered nothing is a bad --source
                    self.fatal = SourceConfigError(f"{end}, but none could be used (skipped: {self.skipped()})")
                    self.set_state("degraded", str(self.fatal))
                    self.slot.close()
                    return
                if self.once:
                    self.set_state("ended", str(end))
                    self.slot.close()
                    return
                self.fail(end)
            except SourceConfigError as error:
                self.fatal = error
                self.set_state("degraded", str(error))
                self.slot.close()
                return
            except Exception as error:  # noqa: BLE001 - any camera failure is retried, never fatal
                self.fail(error)
            finally:
                if source is not None:
                    source.close()
            if self.stopping.wait(backoff):
                break
            backoff = min(backoff * 2, BACKOFF_MAX_S)
        self.slot.close()

    def frame_to_record(self, timeout: float = 2.0) -> np.ndarray | None:
        """The frame a capture records: the source's whole frame (``read_full()``, the Pi camera's main stream),
        read by this thread beside the next frame so the camera is never used from two threads; the newest
        frame for sources whose frames are whole. None when no frame came within TIMEOUT."""
        source = self.source
        if source is None or not source.has_full_stream:
            return self.last_frame
        with self.record_lock:
            self.record_ready.clear()
            self.record_wanted.set()
            ready = self.record_ready.wait(timeout)
            self.record_wanted.clear()
            return self.record if ready else None

    def read_record(self, source: Source, frame: np.ndarray) -> None:
        try:
            self.record = source.read_full()
        except Exception as error:  # noqa: BLE001 - a failed extra read must not stop the camera loop
            log.warning("could not read the frame to record (%s); recording the model's frame", error)
            self.record = frame
        self.record_wanted.clear()
        self.record_ready.set()

    def fail(self, error: Exception) -> None:
        self.retries += 1
        if self.state != "degraded" or self.retries in (1, 10) or self.retries % 100 == 0:
            log.warning("source failed (retry %d, backing off): %s", self.retries, error)
        self.set_state("degraded", str(error))

    def stop(self) -> None:
        self.stopping.set()
        self.slot.close()


class Stats:
    """Frame counts, fps over the last ~2 s, latency percentiles over the last 1,000 frames."""

    def __init__(self, window: int = 1000):
        self.latencies = np.zeros(window, dtype=np.float64)
        self.count = 0
        self.times: deque = deque(maxlen=120)
        self.lock = threading.Lock()

    def record(self, latency_ms: float, now: float) -> None:
        with self.lock:
            self.latencies[self.count % len(self.latencies)] = latency_ms
            self.count += 1
            self.times.append(now)

    def fps(self, now: float | None = None) -> float:
        with self.lock:
            times = [t for t in self.times if t >= (now or time.monotonic()) - 2.0]
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def percentiles(self) -> dict:
        with self.lock:
            filled = self.latencies[: min(self.count, len(self.latencies))].copy()
        if not filled.size:
            return {"p50": None, "p90": None, "p99": None}
        p50, p90, p99 = np.percentile(filled, [50, 90, 99])
        return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3)}


class Classifier:
    """One loaded model, its preprocessing plan, smoother and output settings."""

    def __init__(self, model, manifest, smoothing: int = 1, threshold: float = 0.0, k: int = 3, head=None):
        """``head``: a taught head (device.heads.store.ActiveHead) applied to the model's embedding output
        in place of the model's own probabilities, with its own labels; None: the model's own head."""
        if head is not None and model.embedding_index is None:
            raise ValueError(f"{model.path} has no embedding output, so head revision {head.revision} cannot be "
                             "used: re-convert the bundle with this edgecam (python -m convert BUNDLE).")
        self.model = model
        self.manifest = manifest
        self.head = head
        self.head_info: dict | None = None  # /status "head": set by whoever loads the revision (the daemon)
        self.tuning: dict | None = None  # /status "tuning": how the model and threads were chosen (the daemon)
        self.labels = list(head.labels) if head is not None else list(manifest.labels)
        self.plan = preprocess.InputPlan.for_model(model, manifest.input.colour_order)
        self.workspace = preprocess.Workspace()  # process() runs in one thread: reuse the frame buffers
        self.smoother = postprocess.Smoother(smoothing)
        self.threshold = float(threshold)
        self.k = int(k)
        self.name = f"{manifest.name}:{model.format}" + (f"+head{head.revision}" if head is not None else "")
        self.drift = None  # device.drift.Monitor of this head (the daemon sets it); it reads the two below
        self.embedding: np.ndarray | None = None  # the last frame's embedding, when a head or drift needs it
        self.frame_probabilities: np.ndarray | None = None  # the last frame's own probabilities

    def probabilities(self, frame: np.ndarray) -> np.ndarray:
        """One frame's own probabilities (no smoothing): preprocess, invoke, dequantize; with a taught head,
        that head on the embedding output of the same invoke."""
        if getattr(self.model, "on_sensor", False):  # the AI Camera: outputs came with the frame (device/imx500.py)
            own, embedding = self.model.read(frame)
            return own if self.head is None else self.head.head.probabilities(embedding)
        batch = preprocess.prepare(frame, self.plan, self.workspace)
        if self.head is None:
            if self.drift is None or self.model.embedding_index is None:
                raw = self.model.run(batch)
            else:  # drift reads the embedding of the same invoke
                raw, embedding = self.model.run_both(batch)
                self.embedding = self.dequantize_embedding(embedding[0])
            return postprocess.dequantize(raw[0], self.model.output_scale, self.model.output_zero_point)
        _, embedding = self.model.run_both(batch)
        self.embedding = self.dequantize_embedding(embedding[0])
        return self.head.head.probabilities(self.embedding)

    def outputs(self, frame: np.ndarray) -> tuple:
        """One invoke -> (the model's own probabilities, the embedding or None), both dequantized."""
        if getattr(self.model, "on_sensor", False):
            return self.model.read(frame)
        batch = preprocess.prepare(frame, self.plan, self.workspace)
        raw, embedding = self.model.run_both(batch)
        probabilities = postprocess.dequantize(raw[0], self.model.output_scale, self.model.output_zero_point)
        return probabilities, None if embedding is None else self.dequantize_embedding(embedding[0])

    def dequantize_embedding(self, raw: np.ndarray) -> np.ndarray:
        return postprocess.dequantize(raw, self.model.embedding_scale, self.model.embedding_zero_point)

    def process(self, frame: np.ndarray) -> dict:
        """Frame -> result dict (without the frame number and time, which the daemon adds)."""
        start = time.perf_counter()
        probabilities = self.frame_probabilities = self.probabilities(frame)
        smoothed = self.smoother.update(probabilities)
        result = postprocess.summarise(smoothed, probabilities, self.labels, self.k, self.threshold)
        result["latency_ms"] = round((time.perf_counter() - start) * 1000.0, 3)
        result["model"] = self.name
        return result
