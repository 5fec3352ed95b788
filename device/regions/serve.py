"""Regions in the daemon: each frame read once per region, each region with its own head, smoothing, threshold
and "same result N times in a row" rule (device/regions/__init__.py says what a region is and where its box comes from).

    reader = RegionReader(classifier, regions, bundle, state_dir)   # the model loaded once, shared by all regions
    for result in reader.process(frame): ...                         # one result dict per region, "region": NAME

Cost: one invoke per region per frame on the model the daemon already loaded (its embedding and its own
probabilities come out of the same invoke); each box is a view of the full frame (no copy of the frame), resized
straight to the model's input by device/preprocess.py. A batch-N input (resize_tensor_input) was measured and not
used: see docs/regions.md ("Cost").

Heads: a region taught with ``python -m device teach --region NAME`` has its own head revisions in
``HEADS/regions/NAME/`` beside the model's whole-frame heads (the same model key, so a restart, a new release of
the same model and a rollback find them again); a region never taught reads with the bundle's own head.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np

from device import postprocess, preprocess
from device.regions import Region, with_defaults

log = logging.getLogger("edgecam.regions")
REGIONS_DIR = "regions"


def region_store(store, name: str):
    """The head store of region NAME: REGIONS_DIR/NAME/ inside the model's head store STORE (same model, same
    lock rules, its own revisions and undo)."""
    from device.heads.store import HeadStore

    return HeadStore(store.root / REGIONS_DIR / name, store.bundle, store.model_sha256, store.state_dir)


def open_region_store(bundle, manifest, model_format: str, state_dir, loaded_sha256: str, name: str):
    from device.heads import store as revisions

    return region_store(revisions.open_store(bundle, manifest, model_format, state_dir, loaded_sha256), name)


class Steady:
    """"The same result N times in a row": the label reported changes only after REPEAT identical labels in a row
    (before the first such run it is unknown). Pure: labels in, a label out."""

    def __init__(self, repeat: int = 1):
        self.repeat = max(1, int(repeat))
        self.candidate: str | None = None
        self.run = 0
        self.label = postprocess.UNKNOWN if self.repeat > 1 else None

    def update(self, label: str) -> str:
        if label == self.candidate:
            self.run += 1
        else:
            self.candidate, self.run = label, 1
        if self.run >= self.repeat:
            self.label = label
        return self.label if self.label is not None else label


@dataclass
class RegionHead:
    """One region's reading state: its box and settings, the head that serves it, smoother and steady rule."""

    region: Region
    head: object | None  # device.heads.store.ActiveHead, or None: the bundle's own head
    labels: list
    info: dict
    store: object | None = None  # its head store (region_store), None when it cannot be opened
    smoother: postprocess.Smoother = field(init=False)
    steady: Steady = field(init=False)
    drift: object | None = field(init=False, default=None)  # device.drift.Monitor of this region's head
    embedding: np.ndarray | None = field(init=False, default=None)  # the last frame's, when drift reads it

    def __post_init__(self):
        self.smoother = postprocess.Smoother(self.region.smoothing or 1)
        self.steady = Steady(self.region.repeat)

    def drift_key(self) -> tuple:
        """What the drift monitor depends on: the box, the head revision (a new one brings its reference)."""
        return (self.region.box, self.head.revision if self.head is not None else 0)


def load_heads(classifier, regions: list, bundle, state_dir, smoothing: int, threshold: float) -> list:
    """[RegionHead] for REGIONS on CLASSIFIER's model: each region's current taught head, or the bundle's own
    (also when its head is damaged or fitted on another model: logged, and /status head.fallback says why)."""
    from device.heads import store as revisions

    model, manifest = classifier.model, classifier.manifest
    heads = []
    for region in regions:
        region = with_defaults(region, smoothing, threshold)
        active, problem, info, store = None, None, None, None
        try:
            store = open_region_store(bundle, manifest, model.format or "", state_dir, model.sha256, region.name)
            active, problem = revisions.serving_head(store, manifest)
            if active is not None and model.embedding_index is None:
                active, problem = None, f"{model.path} has no embedding output: re-convert the bundle."
            info = store.describe(manifest, model.format, active)
        except ValueError as error:
            problem = str(error)
        if info is None:
            info = {"revision": 0, "source": "bundle", "labels": list(manifest.labels)}
        if problem:
            info["fallback"] = problem
            log.error("region %s: the taught head is not served, the bundle's own head is: %s", region.name, problem)
        labels = list(active.labels) if active is not None else list(manifest.labels)
        heads.append(RegionHead(region, active, labels, info, store))
    return heads


class RegionReader:
    """Reads every region of a frame with one loaded model (the daemon's Classifier's)."""

    def __init__(self, classifier, heads: list):
        self.classifier = classifier
        self.heads = heads
        self.plan = classifier.plan
        self.workspace = preprocess.Workspace()  # one region at a time: prepare, invoke, then the next
        self.model_name = f"{classifier.manifest.name}:{classifier.model.format}"
        self.drift_changed: list = []  # the drift monitors whose state the last frame changed

    @property
    def regions(self) -> list:
        return [head.region for head in self.heads]

    def probabilities(self, frame: np.ndarray) -> list:
        """Each region's own probabilities on FRAME (no smoothing), in the order of the heads."""
        model = self.classifier.model
        out = []
        for state in self.heads:
            box = state.region.pixels(frame.shape[0], frame.shape[1])
            batch = preprocess.prepare(frame, self.plan, self.workspace, box)  # the box read in place: no copy
            if state.head is None:
                if state.drift is None or state.drift.reference is None:
                    raw = model.run(batch)
                else:  # drift reads the embedding of the same invoke
                    raw, embedding = model.run_both(batch)
                    state.embedding = self.classifier.dequantize_embedding(embedding[0])
                out.append(postprocess.dequantize(raw[0], model.output_scale, model.output_zero_point))
            else:
                _, embedding = model.run_both(batch)
                state.embedding = self.classifier.dequantize_embedding(embedding[0])
                out.append(state.head.head.probabilities(state.embedding))
        return out

    def observe_drift(self, probabilities: list) -> list:
        """Each region's drift monitor reads its frame (embedding, own top-1 confidence) -> the monitors whose
        state changed."""
        changed = []
        for state, own in zip(self.heads, probabilities):
            monitor = state.drift
            if monitor is None or state.embedding is None:
                continue
            before = monitor.state
            monitor.observe(state.embedding, float(np.max(own)))
            if monitor.state != before:
                changed.append(monitor)
        return changed

    def process(self, frame: np.ndarray) -> list:
        """FRAME -> one result dict per region: region, label, confidence, probabilities, top_k, raw_label,
        latency_ms (the whole frame's, all regions), model (the head that read it)."""
        start = time.perf_counter()
        results = []
        own = self.probabilities(frame)
        self.drift_changed = self.observe_drift(own)
        for state, probabilities in zip(self.heads, own):
            smoothed = state.smoother.update(probabilities)
            result = postprocess.summarise(smoothed, probabilities, state.labels, self.classifier.k,
                                           state.region.threshold)
            label = state.steady.update(result["label"])
            if label != result["label"]:
                result["label"] = label
                result["confidence"] = result["probabilities"].get(label, 0.0) if label in state.labels else \
                    result["confidence"]
            revision = state.head.revision if state.head is not None else 0
            results.append({"region": state.region.name, **result,
                            "model": self.model_name + (f"+{state.region.name}{revision}" if revision else "")})
        latency = round((time.perf_counter() - start) * 1000.0, 3)
        for result in results:
            result["latency_ms"] = latency
        return results

    def describe(self) -> list:
        """/status "regions": each region's box, settings and head."""
        return [dict(state.region.describe(), labels=list(state.labels), head=state.info,
                     drift=state.drift.describe() if state.drift is not None else None) for state in self.heads]


class DaemonRegions:
    """The daemon's regions: which serve (device/regions/__init__.py resolve), their reader on the loaded model, and
    whether STATE/regions.json or a region's head revision changed since (checked at most once a second)."""

    CHECK_S = 1.0

    def __init__(self, options, state_dir):
        from device.regions import resolve, state_stamp

        self.options = options
        self.state_dir = state_dir
        self.regions, self.origin = resolve(list(options.regions), options.regions_file, state_dir)
        self.stamp = state_stamp(state_dir)
        self.reader: RegionReader | None = None
        self.head_stamps: tuple = ()
        self.next_check = 0.0
        self.last: dict = {}  # region name -> its last result
        self.model_sha = ""  # the model the regions' drift monitors were made for

    @property
    def active(self) -> bool:
        return bool(self.regions)

    def build(self, classifier) -> None:
        """A reader for the regions on CLASSIFIER (at start, and after every reload)."""
        if not self.regions:
            self.reader = None
            return
        heads = load_heads(classifier, self.regions, self.options.bundle, self.state_dir, self.options.smoothing,
                           self.options.threshold)
        self.attach_drift(classifier, heads)
        self.reader = RegionReader(classifier, heads)
        self.head_stamps = self.heads_stamp()
        self.last = {name: result for name, result in self.last.items() if name in self.names()}
        for state in heads:
            log.info("region %s %s: %s", state.region.name, ",".join(f"{v:g}" for v in state.region.box),
                     "taught revision %s" % state.info.get("revision") if state.head is not None else "the bundle's own head")

    def attach_drift(self, classifier, heads: list) -> None:
        """A drift monitor per region (device/drift.py, scope "region NAME"): its head's reference (a taught
        revision's drift.npz, else the bundle's own), over the daemon's --drift-window-*. A region whose box
        and head are unchanged keeps its monitor (its window goes on); any other gets a fresh one."""
        from device import drift

        kept = {state.region.name: state for state in (self.reader.heads if self.reader is not None else ())
                if state.drift is not None}
        for state in heads:
            old = kept.get(state.region.name)
            if old is not None and old.drift_key() == state.drift_key() and self.model_sha == classifier.model.sha256:
                state.drift = old.drift
                continue
            state.drift = drift.monitor_for(self.options.bundle, classifier, state.store,
                                            self.options.drift_window_frames, self.options.drift_window_seconds,
                                            drift.region_scope(state.region.name), active=state.head)
        self.model_sha = classifier.model.sha256

    def monitors(self) -> list:
        """The regions' drift monitors (the daemon records them in the daily history)."""
        return [state.drift for state in (self.reader.heads if self.reader is not None else ())
                if state.drift is not None]

    def worst_drift(self) -> dict | None:
        """The drift report of the region furthest from what it was taught (state, then measured, then window
        score), with "region": NAME and the name in its reason; None without a monitor."""
        from device import drift

        def rank(state):
            monitor = state.drift
            return (drift.STATES.index(monitor.state), monitor.reference is not None,
                    monitor.fractions()[0] if monitor.window else 0.0)

        heads = self.reader.heads if self.reader is not None else ()
        watched = [state for state in heads if state.drift is not None]
        if not watched:
            return None
        worst = max(watched, key=rank)
        report = worst.drift.describe()
        return dict(report, region=worst.region.name, reason=f"region {worst.region.name}: {report['reason']}")

    def summary(self) -> list:
        """[{"name", "labels"}] of the regions served (the outputs announce them: Home Assistant sensors)."""
        return [{"name": state.region.name, "labels": list(state.labels)}
                for state in (self.reader.heads if self.reader is not None else ())]

    def names(self) -> list:
        return [region.name for region in self.regions]

    def heads_stamp(self) -> tuple:
        stamps = []
        for state in self.reader.heads if self.reader is not None else ():
            store = state.info.get("store")
            try:
                stamps.append(os.stat(os.path.join(store, "current.json")).st_mtime_ns if store else None)
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def changed(self, now: float) -> bool:
        """True when the regions (STATE/regions.json, unless inline flags chose them) or a region's head revision
        changed: the daemon then reloads. A bad new regions.json is logged and the old regions keep serving."""
        from device.regions import RegionError, load_state, state_stamp

        if now < self.next_check:
            return False
        self.next_check = now + self.CHECK_S
        if self.origin != "flags":
            stamp = state_stamp(self.state_dir)
            if stamp != self.stamp:
                self.stamp = stamp
                try:
                    saved = load_state(self.state_dir)
                except RegionError as error:
                    log.error("the new regions are not used, the old ones serve: %s", error)
                    return False
                if saved is not None and [r.describe() for r in saved] != [r.describe() for r in self.regions]:
                    self.regions, self.origin = saved, "state"
                    log.info("regions changed: %s", ", ".join(region.spec() for region in saved))
                    return True
        return self.reader is not None and self.heads_stamp() != self.head_stamps

    def process(self, frame) -> list:
        results = self.reader.process(frame)
        for result in results:
            self.last[result["region"]] = result
        return results

    @property
    def drift_changed(self) -> list:
        """The drift monitors whose state the last frame changed."""
        return self.reader.drift_changed if self.reader is not None else []

    def describe(self) -> list:
        """/status "regions": each region's box, settings, labels, head and last result."""
        if self.reader is None:
            return []
        return [dict(entry, last_result=self.last.get(entry["name"]), origin=self.origin)
                for entry in self.reader.describe()]
