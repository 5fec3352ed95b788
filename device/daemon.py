"""The daemon: wires the bundle, source, pipeline, outputs (device/outputs/), HTTP API and systemd together.

- Startup: a bad bundle, manifest or model raises (ManifestError/ModelError; any other exception while
  loading becomes a ManifestError too); the CLI exits 2 with the message, which names the file and the fix.
  A port in use exits 3 (temporary: the unit retries it).
- SIGTERM/SIGINT: stop within 2 seconds, flush outputs, exit 0.
- SIGHUP: reload the bundle. If the new model fails validation or loading, whatever the exception, the old
  one keeps serving and the error shows in /status ``errors`` (and on stderr and in the log file).
- A failing source is retried with backoff by the capture thread; /status and /healthz say degraded.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from device import drift, serving
from device.heads import store as revisions
from device.http.server import AddressInUse, EventHub, Limits, Server, parse_address
from device.manifest import ManifestError, load_manifest, unreadable
from device.notify import Notifier
from device.outputs import OutputContext, Outputs, configure, open_outputs
from device.outputs.settings import OutputSettings
from device.pipeline import Capture, Classifier, FrameSlot, Stats
from device.regions.serve import DaemonRegions
from device.runtime import load_model, parse_model_spec
from device.sources import MAX_IMAGE_PIXELS, open_source
from device.state import device_state_dir
from device.teach import http as teach_http
from device.teach import regionhttp
from device.teach.service import TeachOptions, TeachService

log = logging.getLogger("edgecam.daemon")
MAX_CONSECUTIVE_FAILURES = 100  # e.g. an Edge TPU unplugged mid-run: exit 1 and let systemd restart us
EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_TEMPORARY = 0, 1, 2, 3  # the README's exit-code contract


def running_release() -> str | None:
    """The id of the installed release whose code this process runs (install.sh's RELEASE/release.json beside
    RELEASE/device/), read once at start; None outside an installed release (a checkout)."""
    try:
        return json.loads((Path(__file__).resolve().parent.parent / "release.json").read_text()).get("id")
    except (OSError, ValueError, AttributeError):
        return None


@dataclass
class Options:
    bundle: str
    model: str | None = None  # None: the tuned choice (device/tune.py), else int8
    source: str = "picamera2"
    loop: bool = True
    max_fps: float = 30.0
    threads: int | None = None  # None: the tuned choice, else all cores
    tune_seconds: float = 3.0  # first start without a tuning for this bundle and device: measure this long
    smoothing: int = 5
    threshold: float = 0.5
    top_k: int = 3
    emit: str = "every"
    http: str = "127.0.0.1:8080"
    token: str | None = None
    log_file: str | None = None
    log_max_bytes: int = 10_000_000
    log_backups: int = 3
    log_emit: str = "change"
    max_image_pixels: int = MAX_IMAGE_PIXELS
    max_connections: int = 32
    max_sse_clients: int = 8
    request_timeout: float = 10.0
    allow_hosts: tuple = ()
    state_dir: str | None = None  # --state-dir; resolved with device.state.resolve_state_dir
    outputs: OutputSettings = field(default_factory=OutputSettings)  # MQTT, webhook (device/outputs/)
    teach: TeachOptions = field(default_factory=TeachOptions)  # data set, capture, uncertain ring (device/teach/)
    drift_window_frames: int = drift.DEFAULT_WINDOW_FRAMES  # device/drift.py: the window drift is judged over
    drift_window_seconds: float = drift.DEFAULT_WINDOW_SECONDS
    regions: tuple = ()  # --region NAME=X,Y,W,H (device/regions/__init__.py Region); none: the whole frame, as before
    regions_file: str | None = None  # --regions-file (TOML)


class Daemon:
    def __init__(self, options: Options, stdout=None):
        self.options = options
        self.hub = EventHub()
        self.stats = Stats()
        self.notifier = Notifier()
        self.slot = FrameSlot()
        self.started = time.monotonic()
        self.started_at = time.time()  # /status: the fleet probe tells a restarted daemon from a stale one
        self.release = running_release()
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.reloading = False
        self.errors: str | None = None
        self.reload_errors = 0
        self.frame_errors = 0
        self.frame_number = 0
        self.last_result: dict | None = None
        self.published_state: str | None = None
        self.state_lock = threading.Lock()
        self.classifier: Classifier | None = None
        self.capture: Capture | None = None
        self.server: Server | None = None
        self.stdout = stdout
        self.outputs: Outputs | None = None  # device/outputs/: stdout, log file, SSE, MQTT, webhook
        self.log_handler: logging.Handler | None = None
        self.teach: TeachService | None = None
        self.reloads = 0
        self.state_dir = device_state_dir(options.state_dir)  # taught heads, data set (device/state.py)
        self.head_store: revisions.HeadStore | None = None  # the loaded model's head revisions
        self.plan: serving.Plan | None = None  # what serves and why (device/serving.py), per set of model files
        self.tuning_thread: threading.Thread | None = None
        self.drift_history = drift.History(self.state_dir / drift.HISTORY_FILE if self.state_dir else None)
        self.drift_recorded = 0.0
        self.regions: DaemonRegions | None = None  # --region, STATE/regions.json (device/regions/serve.py)

    # ---- building ------------------------------------------------------------------------
    def load(self, at_start: bool = False) -> Classifier:
        """Manifest + sha256 + interpreter -> a ready Classifier (raises ManifestError/ModelError), with the head
        that serves: the current taught one from the model's head store, or the bundle's own (revision 0). The
        serving plan goes to STATE/serving.json, where shell commands read it."""
        try:
            manifest = load_manifest(self.options.bundle)
            plan = self.choose_model(manifest, at_start)
            model = load_model(plan.model, self.options.bundle, threads=plan.threads, manifest=manifest)
            classifier = Classifier(model, manifest, self.options.smoothing, self.options.threshold,
                                    self.options.top_k)
        except ValueError:  # ManifestError, ModelError, a taught head's own message: each says what happened
            raise
        except OSError as error:  # a file of the bundle that cannot be read: say so, not "malformed"
            raise ManifestError(f"{self.options.bundle}: {unreadable(error.filename or self.options.bundle, error)}"
                                ) from error
        except Exception as error:  # noqa: BLE001 - nothing a bundle holds may escape as a traceback
            raise ManifestError(
                f"{self.options.bundle}: the bundle cannot be loaded ({type(error).__name__}: {error}). Re-export "
                "it (python -m train / python -m convert) or copy a good one again."
            ) from error
        plan.loaded(model)
        log.info("model: %s", plan.summary())
        classifier = self.with_head(classifier)  # (a taught head makes a new Classifier: the plan goes on that)
        classifier.tuning = plan.describe()
        classifier.drift = drift.monitor_for(self.options.bundle, classifier, self.head_store,
                                             self.options.drift_window_frames, self.options.drift_window_seconds)
        if self.state_dir is not None:
            serving.write_plan(self.state_dir, self.options.bundle, plan)
        return classifier

    def with_head(self, classifier: Classifier) -> Classifier:
        """The classifier with its model's taught head, when one is in use and sound. A damaged or mismatched
        head never stops the daemon: the bundle's own head serves, and the log and /status head.fallback say
        why."""
        manifest, model = classifier.manifest, classifier.model
        try:
            store = revisions.open_store(self.options.bundle, manifest, model.format or "", self.state_dir,
                                         model.sha256)
        except ValueError as error:
            self.head_store = None
            log.error("no taught head can serve: %s", error)
            classifier.head_info = {"revision": 0, "source": "bundle", "labels": list(manifest.labels),
                                    "fallback": str(error)}
            return classifier
        self.head_store = store
        active, problem = revisions.serving_head(store, manifest)
        if active is not None:
            try:
                classifier = Classifier(model, manifest, self.options.smoothing, self.options.threshold,
                                        self.options.top_k, head=active)
            except ValueError as error:  # a model without an embedding output
                active, problem = None, str(error)
        classifier.head_info = store.describe(manifest, model.format, active)
        if problem:
            classifier.head_info["fallback"] = problem
            log.error("the taught head is not served, the bundle's own head is: %s", problem)
        return classifier

    def choose_model(self, manifest, at_start: bool = False) -> serving.Plan:
        """The serving plan (device/serving.py), made once per set of model files: a reload for a new head
        (teach, undo, SIGHUP with the same models) keeps it. Only the start may tune (before READY=1, in a
        subprocess); a reload with new models never tunes on the inference thread: it serves what is known
        (int8 when nothing is) and tunes in the background, then reloads."""
        models = {fmt: entry.sha256 for fmt, entry in manifest.models.items()}
        if self.plan is not None and models == self.plan.models:
            return self.plan
        options = self.options
        self.plan = serving.resolve(options.bundle, manifest, options.model, options.threads, options.source,
                                    self.state_dir, options.tune_seconds, say=log.info, tune=at_start)
        if self.plan.tune_later and not (self.tuning_thread and self.tuning_thread.is_alive()):
            plan = self.plan
            self.tuning_thread = serving.tune_in_background(options.bundle, manifest, self.state_dir, options.source,
                                                            options.tune_seconds, lambda: self.tuned(plan))
        return self.plan

    def tuned(self, plan: serving.Plan) -> None:
        """A background tuning filed its record: the next reload decides again with it."""
        if self.plan is plan:
            self.plan = None
            self.reload_requested.set()

    def start(self) -> None:
        """Everything that can fail for a configuration reason fails here, before READY=1."""
        options = self.options
        if options.model is not None:
            parse_model_spec(options.model)
        chosen = configure(options)  # an unusable output setting (a bad --mqtt URL) disables that output only
        self.classifier = self.load(at_start=True)
        self.regions = DaemonRegions(options, self.state_dir)  # a bad box or settings file fails here (exit 2)
        self.regions.build(self.classifier)
        self.open_outputs(chosen)
        if options.log_file:
            self.log_handler = EventLogHandler(self.outputs)
            logging.getLogger("edgecam").addHandler(self.log_handler)
        self.teach = TeachService(self, options.teach)
        if options.teach.keep_uncertain > 0:
            self.teach.dataset  # noqa: B018 - create the data set folder now: a bad --dataset fails at startup
        size = (self.classifier.model.width, self.classifier.model.height)
        open_source(options.source, size, options.loop)  # a malformed spec fails now, not in the thread
        if options.http != "off":
            limits = Limits(options.max_connections, options.max_sse_clients, options.request_timeout,
                            tuple(options.allow_hosts))
            self.server = Server(parse_address(options.http), self, options.token, limits)
            teach_http.register(self.server.routes, self.server.errors)  # the Teach API and its error statuses
            regionhttp.register(self.server.routes)  # /api/regions* (docs/regions.md)
        self.capture = Capture(lambda: open_source(options.source, size, options.loop, options.max_image_pixels),
                               self.slot,
                               once=not options.loop, on_change=self.check_state)
        self.capture.full_frames = self.regions.active  # regions are cropped from the camera's whole frame
        self.capture.start()
        if self.server is not None:
            self.server.start()
        model = self.classifier.model
        if not model.verified:
            log.warning("%s is not listed in the bundle's manifest (or has no sha256 there): loaded unverified",
                        model.path)
        where = f" on http://{options.http.rsplit(':', 1)[0]}:{self.server.port}" if self.server else ""
        log.info("serving %s (%s, %s) from %s%s", model.path, model.format, model.runtime, options.source, where)
        log.info("head: %s", describe_head(self.classifier.head_info))
        self.event("start", model=model.describe(), source=options.source, http=options.http, pid=os.getpid())
        self.notifier.ready(f"serving {model.format} on {model.runtime}")
        self.teach.refit_if_stale()  # a release with another model, a flipped format: its head re-fitted

    def open_outputs(self, chosen: list | None = None) -> None:
        """Open the outputs (device/outputs/) for the loaded bundle; one that cannot open is disabled, not fatal."""
        manifest, model = self.classifier.manifest, self.classifier.model
        self.outputs = open_outputs(configure(self.options) if chosen is None else chosen, OutputContext(
            name=manifest.name, labels=self.classifier.labels, model=f"{model.format} on {model.runtime}",
            status=self.status, health=self.healthy, hub=self.hub, stdout=self.stdout,
            extra={"regions": self.regions.summary() if self.regions is not None else []}))

    # ---- state ---------------------------------------------------------------------------
    def state(self) -> str:
        if self.reloading:
            return "reloading"
        if self.capture is not None and self.capture.state == "degraded":
            return "degraded"
        if self.frame_number == 0:
            return "starting"
        return "running"

    def healthy(self) -> tuple:
        if self.state() == "degraded":
            return False, (self.capture.error if self.capture else None) or "source degraded"
        return True, None

    def latest_frame(self):
        """The newest RGB frame the source delivered (for the kiosk's live view), or None."""
        return self.capture.last_frame if self.capture is not None else None

    def frame_to_record(self):
        """The frame a capture records (the Pi camera's main stream; the newest frame for other sources), or None."""
        return self.capture.frame_to_record() if self.capture is not None else None

    def status(self) -> dict:
        classifier = self.classifier
        model = dict(classifier.model.describe(), labels=classifier.labels) if classifier else None
        source = {"spec": self.options.source, "state": "starting", "error": None, "retries": 0}
        if self.capture is not None:
            source.update(self.capture.describe())
        regions = {"regions": self.regions.describe()} if self.regions is not None and self.regions.active else {}
        return {
            "state": self.state(),
            "model": model,
            "head": self.head_status(classifier),
            "drift": self.drift_status(classifier),
            "state_dir": str(self.state_dir) if self.state_dir is not None else None,
            "tuning": getattr(classifier, "tuning", None),
            "fps": round(self.stats.fps(), 2),
            "latency_ms": self.stats.percentiles(),
            "frames": self.frame_number,
            "dropped_frames": self.slot.dropped,
            "last_result": self.last_result,
            "source": source,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "errors": self.errors,
            "reload_errors": self.reload_errors,
            "frame_errors": self.frame_errors,
            "skipped_frames": self.capture.skipped() if self.capture is not None else {},
            "outputs": self.outputs.describe() if self.outputs is not None else {},
            "pid": os.getpid(),
            "release": self.release,
            "started_at": round(self.started_at, 3),
            **regions,
        }

    def drift_status(self, classifier) -> dict | None:
        """/status "drift": the whole frame's; where regions serve (the whole frame is not read then), the
        region's that is furthest from what it was taught, its name under "region" (docs/drift.md)."""
        if self.regions is not None and self.regions.reader is not None:
            return self.regions.worst_drift()
        return classifier.drift.describe() if classifier is not None and classifier.drift else None

    def head_status(self, classifier) -> dict | None:
        info = getattr(classifier, "head_info", None)
        refit = self.teach.refit if self.teach is not None else None
        return dict(info, refit=refit) if info is not None and refit is not None else info

    def check_state(self) -> None:
        """Publish a status event when the state changes (called from both threads)."""
        with self.state_lock:
            state = self.state()
            if state == self.published_state:
                return
            self.published_state = state
        if self.outputs is not None:
            self.outputs.status(self.status())
        self.event("state", state=state, source_error=self.capture.error if self.capture else None)

    def event(self, kind: str, **details) -> None:
        if self.outputs is not None:
            self.outputs.event(kind, {"time": round(time.time(), 3), **details})

    # ---- running -------------------------------------------------------------------------
    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_requested.set())

    def run(self) -> int:
        """The inference loop, in the main thread. Returns the exit code."""
        interval = 1.0 / self.options.max_fps if self.options.max_fps > 0 else 0.0
        next_frame = next_watchdog = time.monotonic()
        watchdog = self.notifier.watchdog_interval
        failures = 0
        while not self.stopping.is_set():
            if self.teach is not None and self.teach.head_changed():
                self.reload_requested.set()  # `python -m device teach` or --undo changed the head revision
            if self.regions is not None and self.regions.changed(time.monotonic()):
                self.reload_requested.set()  # STATE/regions.json or a region's head revision changed
            if self.reload_requested.is_set():
                self.reload()
            now = time.monotonic()
            if watchdog and now >= next_watchdog:
                self.notifier.notify("WATCHDOG=1", f"STATUS={self.state()}, {self.stats.fps():.1f} fps")
                next_watchdog = now + watchdog
            if interval and now < next_frame:
                self.stopping.wait(min(next_frame - now, 0.25))
                continue
            frame, item = self.slot.get_item(timeout=0.1)
            if frame is None:
                if self.slot.closed and not self.capture.is_alive():
                    break  # the replay ended (--once) or the source cannot work at all
                self.check_state()
                continue
            next_frame = max(next_frame + interval, now) if interval else now
            try:
                self.handle(frame, item)
                failures = 0
            except Exception as error:  # noqa: BLE001 - one bad frame or invoke must not stop the daemon
                failures += 1
                self.frame_errors += 1
                if failures == 1:
                    log.error("frame failed (%s: %s); skipping it", type(error).__name__, error)
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    log.error("%d frames in a row failed: exiting 1 so that systemd restarts the daemon", failures)
                    return 1
        return 2 if self.capture is not None and self.capture.fatal is not None else 0

    def handle(self, frame, item: str | None = None) -> None:
        if self.regions is not None and self.regions.reader is not None:
            return self.handle_regions(frame, item)
        result = self.classifier.process(frame)
        self.frame_number += 1
        result = {"frame": self.frame_number, "time": round(time.time(), 3), **result}
        if item is not None:
            result["item"] = item  # the replayed file a frame came from (image folders)
        self.stats.record(result["latency_ms"], time.monotonic())
        self.last_result = result
        self.outputs.result(result)  # queued per output: never blocks inference
        score, drift_changed = drift.observe(self.classifier.drift, self.classifier)
        if self.teach is not None:
            self.teach.observe(frame, result, score)
        self.record_drift([self.classifier.drift] if drift_changed else [])
        if self.frame_number == 1 or self.published_state != "running":
            self.check_state()

    def drift_monitors(self) -> list:
        """The drift monitors that read frames now: one per region where regions serve, else the whole frame's."""
        if self.regions is not None and self.regions.reader is not None:
            return self.regions.monitors()
        monitor = self.classifier.drift if self.classifier is not None else None
        return [monitor] if monitor is not None else []

    def record_drift(self, changed: list) -> None:
        """Every monitor into the daily history (at most every 10 s; written at most every 10 minutes), and at
        once when a monitor's state CHANGED: each new state is logged, an event and a status published."""
        if not changed and time.monotonic() - self.drift_recorded <= 10.0:
            return
        self.drift_recorded = time.monotonic()
        for monitor in self.drift_monitors():
            self.drift_history.record(monitor)
        self.drift_history.flush()
        for monitor in changed:
            region = drift.scope_region(monitor.scope)
            log.warning("drift%s: %s (%s)", f" in region {region}" if region else "", monitor.state,
                        monitor.reason())
            details = {key: value for key, value in monitor.describe().items()
                       if key in ("state", "score", "since", "reason")}
            if region is not None:
                details["region"] = region
            self.event("drift", **details)
        if changed and self.outputs is not None:
            self.outputs.status(self.status())
    def handle_regions(self, frame, item: str | None = None) -> None:
        """One result line per region (device/regions/serve.py), each with "region": NAME."""
        results = self.regions.process(frame)
        self.frame_number += 1
        stamp = {"frame": self.frame_number, "time": round(time.time(), 3)}
        self.stats.record(results[0]["latency_ms"] if results else 0.0, time.monotonic())
        for result in results:
            result = {**stamp, **result}
            if item is not None:
                result["item"] = item
            self.regions.last[result["region"]] = result
            self.last_result = result
            self.outputs.result(result)
        self.record_drift(self.regions.drift_changed)
        if self.frame_number == 1 or self.published_state != "running":
            self.check_state()

    def reload(self) -> None:
        self.reload_requested.clear()
        self.reloading = True
        self.notifier.reloading()
        self.check_state()
        previous = self.classifier.model.sha256 if self.classifier is not None else None
        try:
            classifier = self.load()
        except Exception as error:  # noqa: BLE001 - nothing a new bundle holds may take the daemon down
            self.errors = f"reload failed, still serving the previous model: {error}"
            self.reload_errors += 1
            log.error("%s", self.errors)
            self.event("reload_failed", error=str(error))
        else:
            self.classifier = classifier
            if self.regions is not None:
                self.regions.build(classifier)
                if self.capture is not None:  # regions added or removed at run time: whole frames, or not
                    self.capture.full_frames = self.regions.active
            if self.outputs is not None:  # MQTT discovery follows a taught head, an undo, a release
                self.outputs.labels(classifier.labels)
                if self.regions is not None:
                    self.outputs.regions(self.regions.summary())
            self.errors = None
            if self.teach is not None:
                self.teach.head_stamp = self.teach.stamp()  # this reload read the store: no second one for it
            log.info("reloaded %s (%s); head: %s", classifier.model.path, classifier.model.sha256[:12],
                     describe_head(classifier.head_info))
            self.event("reloaded", model=classifier.model.describe())
            if self.teach is not None and classifier.model.sha256 != previous:
                self.teach.refit_if_stale()  # a new model serves: its head follows (in the background)
        finally:
            self.reloading = False
            self.reloads += 1
            self.notifier.ready()
            self.check_state()

    def reload_and_wait(self, timeout: float) -> bool:
        """Ask the inference loop to reload (the SIGHUP path) and wait until it did; False on timeout."""
        target = self.reloads + 1
        self.reload_requested.set()
        deadline = time.monotonic() + timeout
        while self.reloads < target and time.monotonic() < deadline and not self.stopping.is_set():
            time.sleep(0.02)
        return self.reloads >= target

    def shutdown(self) -> None:
        """Stop the capture thread and the server, drain the outputs; bounded to well under 2 seconds."""
        self.notifier.stopping()
        if self.capture is not None:
            self.capture.stop()
            self.capture.join(timeout=1.0)  # a camera stuck in read() is a daemon thread: left behind
        if self.server is not None:
            self.server.stop()
        self.event("stop", frames=self.frame_number)
        for monitor in self.drift_monitors():
            self.drift_history.record(monitor)
        self.drift_history.flush(force=True)
        if self.log_handler is not None:
            logging.getLogger("edgecam").removeHandler(self.log_handler)
        if self.outputs is not None:
            self.outputs.close()  # drains what is queued, bounded in time
        self.notifier.close()


def describe_head(info: dict | None) -> str:
    """The log's words for /status head: which head serves, for which model, fitted on which frames."""
    if not info:
        return "none"
    if info.get("source") == "taught":
        text = (f"taught revision {info['revision']} ({', '.join(info['labels'])}), fitted on {info.get('frames')} "
                f"frames from {info.get('data')} at {info.get('fitted')}")
    else:
        text = f"the bundle's own (revision 0: {', '.join(info.get('labels') or [])})"
    sha = info.get("model_sha256") or ""
    return text + (f", model sha256 {sha[:12]}..., revisions in {info.get('store')}" if sha else "")


class EventLogHandler(logging.Handler):
    """Daemon warnings and errors into the rotating log file, as JSON event lines."""

    def __init__(self, outputs: Outputs):
        super().__init__(logging.INFO)
        self.outputs = outputs

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.outputs.event("log", {"time": round(time.time(), 3), "level": record.levelname.lower(),
                                       "message": record.getMessage()})
        except Exception:  # noqa: BLE001 - logging must never take the daemon down
            self.handleError(record)


def serve(options: Options, stdout=None) -> int:
    """Run the daemon until SIGTERM (or the end of a --once replay). Returns the exit code."""
    daemon = Daemon(options, stdout or sys.stdout)
    daemon.install_signals()
    try:
        daemon.start()
    except ValueError as error:  # bundle, manifest, model (ManifestError, ModelError), --source, --http/--token
        daemon.shutdown()
        print(f"edgecam: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except AddressInUse as error:
        daemon.shutdown()
        print(f"edgecam: {error}", file=sys.stderr)
        return EXIT_TEMPORARY
    try:
        code = daemon.run()
    finally:
        daemon.shutdown()
    if code == 2:
        print(f"edgecam: {daemon.capture.fatal}", file=sys.stderr)
    return code
