"""Drift: does the camera still see what its head was taught? Numpy only; docs/drift.md explains the figures.

A head's **reference** (:class:`Reference`) is made from the frames it was fitted on (a taught head, at fit
time) or from the bundle's held-out images (the bundle's own head, by convert, per model format):

- the mean embedding of each class, and the distances of those frames to their nearest class mean (each frame
  left out of its own class's mean, so the figures are those of frames the means never saw);
- the head's cross-validated (or held-out) top-1 confidences.

Per frame, :func:`frame_score` is the distance of the frame's embedding to the nearest class mean divided by
the 95th percentile of the reference distances: 1.0 is as far as the farthest 5% of the taught frames; a frame
above FAR_RATIO is "far from anything taught". Per window, :class:`Monitor` counts far frames and frames read
with less confidence than the reference's 10th percentile, and turns them into a state with hysteresis:

    ok -> watch     when 20% of the window is far (or 40% low-confidence: 4x what the head's own frames give)
    -> drifted      when 50% of the window is far
    drifted -> watch below 30% far;  watch -> ok below 10% far and 25% low-confidence

The window holds at most WINDOW_FRAMES frames spread over WINDOW_SECONDS (a frame joins it at most every
WINDOW_SECONDS / WINDOW_FRAMES seconds; 0 seconds: every frame), so it spans minutes at any frame rate and a
person walking past never decides it. One Monitor per head, per region: it holds no global state.
"""

from __future__ import annotations

import io
import json
import os
import time
import weakref
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REFERENCE_FILE = "drift.npz"  # in a head revision's folder; the bundle's is tflite/drift.npz, one entry per format
BUNDLE_REFERENCE_FILE = "tflite/drift.npz"
QUANTILES = np.linspace(0.0, 1.0, 101)
FAR_RATIO = 1.5  # a frame further than 1.5 x the 95th percentile of the taught frames' distances is "far"
LOW_QUANTILE = 10  # a confidence under the reference's 10th percentile is "low" (10% of the head's own frames)
WATCH_FAR, CLEAR_WATCH_FAR = 0.2, 0.1
DRIFTED_FAR, CLEAR_DRIFTED_FAR = 0.5, 0.3
WATCH_LOW, CLEAR_WATCH_LOW = 0.4, 0.25
MIN_FRAMES = 50  # a window decides nothing before it holds this many frames (or all WINDOW_FRAMES, if fewer)
DEFAULT_WINDOW_FRAMES = 300
DEFAULT_WINDOW_SECONDS = 300.0
STATES = ("ok", "watch", "drifted")
HISTORY_FILE = "drift-history.json"
HISTORY_DAYS = 8
HISTORY_EVERY_S = 600.0
REGION_SCOPE = "region "  # a region's monitor and daily history entry: scope "region NAME"


@dataclass
class Reference:
    """What a head's own frames look like, in the embedding the model gives for them."""

    means: np.ndarray        # [classes, size] class means of the frames the head was fitted on
    distances: np.ndarray    # [101] quantiles of those frames' distances to the nearest (leave-one-out) mean
    confidences: np.ndarray  # [101] quantiles of the head's cross-validated top-1 confidence
    frames: int
    source: str              # in words: which frames made it

    def __post_init__(self):
        self.means = np.ascontiguousarray(self.means, np.float32)
        self.squares = np.einsum("ij,ij->i", self.means, self.means).astype(np.float64)  # |mean|^2, per class
        self.scale = 1.0 / max(float(self.distances[95]), 1e-12)

    @property
    def far_distance(self) -> float:
        return float(self.distances[95]) * FAR_RATIO

    @property
    def low_confidence(self) -> float:
        return float(self.confidences[LOW_QUANTILE])

    def arrays(self, prefix: str = "") -> dict:
        return {f"{prefix}means": self.means.astype(np.float32), f"{prefix}distances": self.distances,
                f"{prefix}confidences": self.confidences, f"{prefix}frames": np.int64(self.frames),
                f"{prefix}source": np.str_(self.source)}

    @classmethod
    def from_arrays(cls, data, prefix: str = "") -> "Reference":
        means = np.asarray(data[f"{prefix}means"], np.float32)
        distances = np.asarray(data[f"{prefix}distances"], np.float64)
        confidences = np.asarray(data[f"{prefix}confidences"], np.float64)
        if means.ndim != 2 or distances.shape != QUANTILES.shape or confidences.shape != QUANTILES.shape:
            raise ValueError(f"shapes {means.shape}, {distances.shape}, {confidences.shape}")
        return cls(means, distances, confidences, int(data[f"{prefix}frames"]), str(data[f"{prefix}source"]))


def make_reference(embeddings, labels, confidences, source: str) -> Reference:
    """EMBEDDINGS [N, size] of a head's frames with their class LABELS [N] and the head's cross-validated top-1
    CONFIDENCES [N] -> Reference. Each frame's distance is to the nearest class mean, its own class's mean taken
    without it (n/(n-1) times the distance to the full mean), so the reference is not flattered by the frames
    that made the means."""
    embeddings = np.asarray(embeddings, np.float64)
    labels = np.asarray(labels, int)
    classes = np.unique(labels)
    means = np.stack([embeddings[labels == label].mean(axis=0) for label in classes])
    counts = np.array([np.sum(labels == label) for label in classes])
    gaps = np.linalg.norm(embeddings[:, None, :] - means[None], axis=2)  # [N, classes]
    own = np.searchsorted(classes, labels)
    rows = np.arange(len(labels))
    alone = counts[own] <= 1
    gaps[rows, own] = np.where(alone, np.inf, gaps[rows, own] * counts[own] / np.maximum(counts[own] - 1, 1))
    distances = gaps.min(axis=1)
    distances = distances[np.isfinite(distances)]
    if not distances.size:
        raise ValueError("a drift reference needs at least two frames of one class")
    return Reference(means.astype(np.float32), np.quantile(distances, QUANTILES),
                     np.quantile(np.asarray(confidences, np.float64), QUANTILES), len(labels), source)


def nearest_distance(reference: Reference, embedding) -> float:
    """Distance of one embedding [size] to the nearest class mean: |x|^2 - 2 m.x + |m|^2, one matrix-vector
    product (the cost is per frame)."""
    x = np.asarray(embedding, np.float32)
    squared = float(np.min(reference.squares - 2.0 * (reference.means @ x))) + float(x @ x)
    return max(squared, 0.0) ** 0.5


def frame_score(reference: Reference, embedding) -> float:
    """The frame's distance to the nearest class mean over the 95th percentile of the reference's: ~1 or less
    for frames like the taught ones; above FAR_RATIO, far from anything taught."""
    return nearest_distance(reference, embedding) * reference.scale


# ---- files ------------------------------------------------------------------------------------------
def to_bytes(references: dict) -> bytes:
    """{name: Reference} -> .npz bytes (a head revision has one, named ""; the bundle one per model format)."""
    arrays = {}
    for name, reference in references.items():
        arrays.update(reference.arrays(f"{name}." if name else ""))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def load(path: os.PathLike, name: str = "") -> Reference | None:
    """The reference NAME (a model format for the bundle's file, "" for a head revision's) from PATH; None when
    the file or the entry does not exist; ValueError naming the file when it is damaged."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            prefix = f"{name}." if name else ""
            if f"{prefix}means" not in data.files:
                return None
            return Reference.from_arrays(data, prefix)
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"{path} is not a drift reference ({error}): re-convert the bundle or teach again; "
                         "until then drift is not measured.") from None


def reference_for(bundle, manifest, model_format: str, head_store=None, active=None) -> tuple:
    """The reference of the head that serves -> (Reference or None, in words where it came from or why none).
    A taught head: its revision's drift.npz; the bundle's own head: the bundle's file, the entry for
    MODEL_FORMAT (edgetpu: the int8 one, the same graph)."""
    try:
        if active is not None and head_store is not None:
            found = load(head_store.revision_dir(active.revision) / REFERENCE_FILE)
            if found is None:
                return None, (f"head revision {active.revision} has no drift reference (taught before drift was "
                              "measured): teach again to measure drift")
            return found, found.source
        info = getattr(manifest, "embedding", None)
        relative = getattr(info, "drift_file", "") if info is not None else ""
        name = "int8" if model_format == "edgetpu" else model_format
        found = load(Path(bundle) / relative, name) if relative else None
        if found is None:
            return None, ("the bundle has no drift reference for its own head (converted with --skip-parity or "
                          "before drift was measured): re-convert it (python -m convert) or teach a head")
        return found, found.source
    except ValueError as error:
        return None, str(error)


# ---- the monitor ------------------------------------------------------------------------------------
class Monitor:
    """The drift state of one head on one stream of frames (one per region, where regions exist)."""

    def __init__(self, reference: Reference | None, window_frames: int = DEFAULT_WINDOW_FRAMES,
                 window_seconds: float = DEFAULT_WINDOW_SECONDS, note: str = "", scope: str = "frame"):
        if window_frames < 1 or window_seconds < 0:
            raise ValueError("--drift-window-frames must be >= 1 and --drift-window-seconds >= 0.")
        self.reference = reference
        self.note = note
        self.scope = scope
        self.window_frames = int(window_frames)
        self.window_seconds = float(window_seconds)
        self.spacing = self.window_seconds / self.window_frames
        self.window: deque = deque()  # (time, far, low)
        self.far = self.low = 0
        self.last_added = -np.inf
        self.frame_score: float | None = None
        self.state = "ok"
        self.since = time.time()
        self.frames = 0
        self.far_frames = 0

    def observe(self, embedding, confidence: float, now: float | None = None) -> float | None:
        """One frame's embedding and own top-1 confidence -> its score (None without a reference)."""
        if self.reference is None or embedding is None:
            return None
        now = time.time() if now is None else now
        score = frame_score(self.reference, embedding)
        self.frame_score = score
        self.frames += 1
        far = score > FAR_RATIO
        self.far_frames += far
        if now - self.last_added < self.spacing:
            return score
        self.last_added = now
        low = confidence < self.reference.low_confidence
        self.window.append((now, far, low))
        self.far += far
        self.low += low
        while len(self.window) > self.window_frames or (
                self.window_seconds and self.window[0][0] < now - self.window_seconds):
            _, old_far, old_low = self.window.popleft()
            self.far -= old_far
            self.low -= old_low
        self._decide(now)
        return score

    def _decide(self, now: float) -> None:
        if len(self.window) < min(MIN_FRAMES, self.window_frames):
            return
        far, low = self.fractions()
        state = self.state
        if far >= DRIFTED_FAR:
            state = "drifted"
        elif self.state == "drifted":
            state = "drifted" if far >= CLEAR_DRIFTED_FAR else "watch"
        elif far >= WATCH_FAR or low >= WATCH_LOW:
            state = "watch"
        elif self.state == "watch" and (far >= CLEAR_WATCH_FAR or low >= CLEAR_WATCH_LOW):
            state = "watch"
        else:
            state = "ok"
        if state != self.state:
            self.state, self.since = state, now

    def fractions(self) -> tuple:
        count = max(len(self.window), 1)
        return self.far / count, self.low / count

    def reason(self) -> str:
        if self.reference is None:
            return f"not measured: {self.note}"
        count = len(self.window)
        needed = min(MIN_FRAMES, self.window_frames)
        if count < needed:
            return f"gathering frames: {count} of the {needed} a decision needs"
        far, low = self.fractions()
        since = time.strftime("%H:%M", time.localtime(self.since))
        text = f"{far:.0%} of the last {count} frames are far from anything taught"
        if self.state == "ok":
            return f"the scene matches what was taught ({text})"
        if far < WATCH_FAR and low >= CLEAR_WATCH_LOW:
            text = (f"{low:.0%} of the last {count} frames are read with less confidence than 90% of the head's own "
                    f"frames (10% expected)")
        return f"{text}; since {since}"

    def describe(self) -> dict:
        """/status ``drift``."""
        far, low = self.fractions()
        measured = self.reference is not None
        return {
            "state": self.state, "score": round(far, 4) if measured and self.window else None,
            "match_percent": round(100 * (1 - far), 1) if measured and self.window else None,
            "frame_score": None if self.frame_score is None else round(self.frame_score, 3),
            "window": {"frames": len(self.window), "max_frames": self.window_frames,
                       "seconds": self.window_seconds, "far": self.far, "low_confidence": self.low},
            "since": round(self.since, 3), "reason": self.reason(), "measured": measured,
            "reference": self.reference.source if measured else None,
            "frames": self.frames, "far_frames": self.far_frames,
        }


# ---- the daily history --------------------------------------------------------------------------------
class History:
    """Daily summaries in STATE/drift-history.json, at most HISTORY_DAYS days (a week in a few kB), one atomic
    write at most every HISTORY_EVERY_S seconds (and at close): when drift began, how far it went."""

    def __init__(self, path: os.PathLike | None):
        self.path = Path(path) if path is not None else None
        self.days = self._read()
        self.written = time.monotonic()
        self.dirty = False
        self.seen = weakref.WeakKeyDictionary()  # monitor -> (frames, far frames) already counted

    def _read(self) -> dict:
        if self.path is None:
            return {}
        try:
            days = json.loads(self.path.read_text(encoding="utf-8")).get("days", {})
        except (OSError, ValueError, AttributeError):
            return {}
        return days if isinstance(days, dict) else {}

    def record(self, monitor: Monitor, now: float | None = None) -> None:
        """Fold MONITOR's frames since the last call, its state and window score into today's entry for its scope."""
        if self.path is None or monitor.reference is None:
            return
        now = time.time() if now is None else now
        day = self.days.setdefault(time.strftime("%Y-%m-%d", time.localtime(now)), {})
        entry = day.setdefault(monitor.scope, {"frames": 0, "far_frames": 0, "worst": "ok", "worst_score": 0.0,
                                               "first_watch": None, "first_drifted": None})
        seen_frames, seen_far = self.seen.get(monitor, (0, 0))
        entry["frames"] += monitor.frames - seen_frames
        entry["far_frames"] += monitor.far_frames - seen_far
        self.seen[monitor] = (monitor.frames, monitor.far_frames)
        far, _ = monitor.fractions()
        if monitor.window and len(monitor.window) >= min(MIN_FRAMES, monitor.window_frames):
            entry["worst_score"] = round(max(entry["worst_score"], far), 3)
        state = monitor.state
        if STATES.index(state) > STATES.index(entry["worst"]):
            entry["worst"] = state
        clock = time.strftime("%H:%M", time.localtime(monitor.since))
        if state in ("watch", "drifted") and entry["first_watch"] is None:
            entry["first_watch"] = clock
        if state == "drifted" and entry["first_drifted"] is None:
            entry["first_drifted"] = clock
        for old in sorted(self.days)[:-HISTORY_DAYS]:
            del self.days[old]
        self.dirty = True

    def flush(self, force: bool = False) -> None:
        if self.path is None or not self.dirty or (not force and time.monotonic() - self.written < HISTORY_EVERY_S):
            return
        from device.atomic import atomic_write

        try:
            atomic_write(self.path, json.dumps({"days": self.days}, sort_keys=True, separators=(",", ":")))
            self.dirty = False
        except OSError:
            pass  # a full or read-only state folder: the history is a convenience, serving goes on
        self.written = time.monotonic()


# ---- the daemon's hooks -----------------------------------------------------------------------------
def monitor_for(bundle, classifier, head_store, window_frames: int = DEFAULT_WINDOW_FRAMES,
                window_seconds: float = DEFAULT_WINDOW_SECONDS, scope: str = "frame", active=...) -> Monitor:
    """A fresh Monitor for the head that serves on CLASSIFIER's model: the classifier's own head, or ACTIVE (a
    region's taught head from its own HEAD_STORE; None: the bundle's own head). A reload makes a new one: a new
    head, a new reference."""
    if active is ...:
        active = classifier.head
    if classifier.model.embedding_index is None:
        reference, note = None, ("the model has no embedding output: re-convert the bundle with this edgecam "
                                 "(python -m convert BUNDLE)")
    else:
        reference, note = reference_for(bundle, classifier.manifest, classifier.model.format or "", head_store,
                                        active)
    return Monitor(reference, window_frames, window_seconds, note, scope)


def region_scope(name: str) -> str:
    """The drift scope of region NAME: its monitor's and its daily history entry's ("frame" is the whole
    frame's, and a region may be named "frame")."""
    return f"{REGION_SCOPE}{name}"


def scope_region(scope: str) -> str | None:
    """The region name of a drift SCOPE, None for the whole frame's."""
    return scope[len(REGION_SCOPE):] if scope.startswith(REGION_SCOPE) else None


def observe(monitor: Monitor | None, classifier, now: float | None = None) -> tuple:
    """After CLASSIFIER processed a frame: -> (the frame's score or None, True when the state changed)."""
    if monitor is None or classifier.embedding is None or classifier.frame_probabilities is None:
        return None, False
    state = monitor.state
    score = monitor.observe(classifier.embedding, float(np.max(classifier.frame_probabilities)), now)
    return score, monitor.state != state


def history_lines(state_dir, scope: str | None = None) -> list:
    """``python -m device status``: the daily summaries in words, newest first, of every scope (the whole frame,
    "region NAME") or of SCOPE only (none without a state folder)."""
    if state_dir is None:
        return []
    lines = []
    for day, scopes in sorted(History(Path(state_dir) / HISTORY_FILE).days.items(), reverse=True):
        for name, entry in sorted(scopes.items()) if scope is None else [(scope, scopes.get(scope))]:
            if not isinstance(entry, dict):
                continue
            began = entry.get("first_drifted") or entry.get("first_watch")
            far = entry.get("far_frames", 0)
            lines.append(f"{day} {name}: worst {entry.get('worst')}{f' (from {began})' if began else ''}, "
                         f"{far} of {entry.get('frames', 0)} frames far from anything taught, window at worst "
                         f"{entry.get('worst_score', 0):.0%} far")
    return lines
