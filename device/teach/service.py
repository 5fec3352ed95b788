"""The daemon's side of teaching: the data set, the capture rate, the uncertain ring, teach and undo.

The daemon holds one :class:`TeachService`; device/teach/http.py calls it. Teaching runs in its own process
(``python -m device teach ... --json``), so the TFLite embedding pass and the fit never add to the daemon's
memory; when it accepts a head, the daemon reloads (the SIGHUP path: the new classifier is built first and
the old one keeps serving if that fails) and waits for the switch before answering.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from device import serving
from device.heads import store as revisions
from device.teach.dataset import (
    DEFAULT_LIMIT_BYTES,
    DEFAULT_MIN_FREE_BYTES,
    DEFAULT_UNCERTAIN_BYTES,
    Dataset,
    default_root,
)

log = logging.getLogger("edgecam.teach")
TEACH_TIMEOUT_S = 600
UNCERTAIN_INTERVAL_S = 1.0  # at most one uncertain frame kept per second (spares the SD card)
HEAD_POLL_S = 2.0
RELOAD_WAIT_S = 15.0


class TeachBusy(RuntimeError):
    """Another teach or undo is running, or holds the head store's lock (HTTP 409)."""


class TeachRefused(ValueError):
    """Teaching cannot start (too little data, nothing to undo, no embedding): HTTP 409."""


@dataclass
class TeachOptions:
    dataset: str | None = None  # None: /var/lib/edgecam/dataset if writable, else ./data/NAME-own
    keep_uncertain: int = 0
    uncertain_mb: float = DEFAULT_UNCERTAIN_BYTES / 1e6
    capture_fps: float = 5.0
    dataset_limit_mb: float = DEFAULT_LIMIT_BYTES / 1e6
    min_free_mb: float = DEFAULT_MIN_FREE_BYTES / 1e6


class TeachService:
    def __init__(self, daemon, options: TeachOptions):
        self.daemon = daemon
        self.options = options
        self._dataset: Dataset | None = None
        self.lock = threading.Lock()  # one teach or undo at a time
        self.last_capture = 0.0
        self.last_uncertain = 0.0
        self.next_poll = 0.0
        self.head_stamp = self.stamp()
        self.refit: dict | None = None  # /status head.refit: a new model's head re-fitted at start

    @property
    def dataset(self) -> Dataset:
        """Made on first use, so a daemon nobody teaches creates no folder (unless --keep-uncertain)."""
        if self._dataset is None:
            options = self.options
            root = options.dataset or default_root(self.daemon.classifier.manifest.name, self.daemon.state_dir)
            self._dataset = Dataset(root, int(options.dataset_limit_mb * 1e6), int(options.min_free_mb * 1e6),
                                    options.keep_uncertain, int(options.uncertain_mb * 1e6))
        return self._dataset

    # ---- capture --------------------------------------------------------------------------------
    def capture(self, label: str) -> tuple:
        """Save the newest camera frame into LABEL -> (file, count). Raises RateLimited, DatasetError, DatasetFull."""
        self.dataset.require_class(label)
        now = time.monotonic()
        fps = self.options.capture_fps
        if fps > 0 and now - self.last_capture < 1.0 / fps * 0.9:
            raise RateLimited(f"capturing faster than --capture-fps {fps:g}: wait {1.0 / fps:.2f} s between frames.")
        frame = self.daemon.frame_to_record()
        if frame is None:
            raise NoFrame("no camera frame yet: wait for the camera to start (see /status source).")
        result = self.daemon.last_result or {}
        reading = {key: result.get(key) for key in ("label", "confidence", "raw_label")} if result else None
        saved = self.dataset.save(frame, label, self.daemon.options.source, self.model_name(), reading)
        self.last_capture = now  # only a saved frame counts against the rate
        return saved

    def model_name(self) -> str:
        classifier = self.daemon.classifier
        return classifier.name if classifier is not None else ""

    def observe(self, frame, result: dict, drift: float | None = None) -> None:
        """From the inference loop: keep a frame whose reading fell under the threshold, or that is far from
        anything taught (DRIFT, device/drift.py: its score), at most 1 a second; the ring keeps the highest drift."""
        from device.drift import FAR_RATIO

        far = drift is not None and drift > FAR_RATIO
        if self.options.keep_uncertain <= 0 or (result.get("label") != "unknown" and not far):
            return
        now = time.monotonic()
        if now - self.last_uncertain < UNCERTAIN_INTERVAL_S:
            return
        self.last_uncertain = now
        try:
            self.dataset.keep(frame, result.get("raw_label", ""), result.get("confidence", 0.0),
                              self.daemon.options.source, self.model_name(), drift)
        except (OSError, ValueError) as error:
            log.warning("could not keep an uncertain frame: %s", error)

    def describe(self) -> dict:
        """GET /api/dataset."""
        dataset = self.dataset
        classifier = self.daemon.classifier
        return {"root": str(dataset.root), "classes": dataset.summary(), "uncertain": dataset.uncertain(),
                "bytes": dataset.bytes, "limit_bytes": dataset.limit_bytes, "free_bytes": dataset.free_bytes(),
                "min_free_bytes": dataset.min_free_bytes, "capture_fps": self.options.capture_fps,
                "model_labels": list(classifier.labels) if classifier else [],
                "recording_blocked": dataset.blocked()}

    # ---- teaching -------------------------------------------------------------------------------
    def teach(self, force: bool = False, data=None) -> dict:
        """Run ``python -m device teach --json`` and switch to its head when accepted. Raises TeachBusy (another
        teach, or the head store locked), TeachRefused (too little data, ...), TeachStorage (the state folder is
        read-only or full) or TeachFailed, each with one line that says what to do; the daemon's log has it too."""
        if not self.lock.acquire(blocking=False):
            raise TeachBusy("teaching is already running: wait for it to finish.")
        try:
            result = self._run_teach(["--data", str(data or self.dataset.root)] + (["--force"] if force else []))
            if result.get("accepted"):
                self.switch()
            return result
        finally:
            self.lock.release()

    def undo(self) -> dict:
        if not self.lock.acquire(blocking=False):
            raise TeachBusy("teaching is running: undo when it has finished.")
        try:
            store = self.daemon.head_store
            if store is None:
                raise TeachRefused((self.daemon.classifier.head_info or {}).get("fallback") or "no head store.")
            try:
                revision = store.undo()
            except revisions.NothingToUndo as error:
                raise TeachRefused(str(error)) from None
            except ValueError as error:  # a damaged current.json: the shell's exit 2 "delete it", not a 500
                raise self._failed(TeachRefused(str(error))) from None
            except revisions.StoreLocked as error:
                raise self._failed(TeachBusy(str(error))) from None
            except revisions.StoreUnwritable as error:
                raise self._failed(TeachStorage(error.strerror)) from None
            self.switch()
            return {"revision": revision, "labels": list(self.daemon.classifier.labels)}
        finally:
            self.lock.release()

    def _run_teach(self, arguments: list) -> dict:
        """``python -m device teach --bundle B --model M --state-dir S --json ARGUMENTS`` in its own process
        (teaching's memory never adds to the daemon's) -> its JSON answer, or a typed error (logged)."""
        options, plan = self.daemon.options, self.daemon.plan
        model = serving.teach_model(plan.model) if plan is not None else "int8"  # the served file's heads
        line = [sys.executable, "-m", "device", "teach", "--bundle", str(options.bundle), "--model", model, "--json"]
        if self.daemon.state_dir is not None:
            line += ["--state-dir", str(self.daemon.state_dir)]
        if plan is not None:
            line += ["--threads", str(plan.threads)]
        package_parent = str(Path(__file__).resolve().parent.parent.parent)
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [package_parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        try:
            done = subprocess.run(line + arguments, capture_output=True, text=True, timeout=TEACH_TIMEOUT_S,
                                  env=environment, check=False)
        except subprocess.TimeoutExpired:
            raise self._failed(TeachFailed(f"teaching took longer than {TEACH_TIMEOUT_S} s and was stopped; "
                                           "teach on fewer frames.")) from None
        except OSError as error:  # no memory for a new process, ...
            raise self._failed(TeachFailed(f"teaching could not start ({error}); try again.")) from None
        lines = [text for text in done.stdout.splitlines() if text.startswith("{")]
        try:
            result = json.loads(lines[-1])
        except (IndexError, ValueError):
            raise self._failed(TeachFailed(f"teaching failed (exit {done.returncode}): {last_line(done.stderr)}. "
                                           "The daemon's log has its output."), done.stderr) from None
        if "error" in result:
            kind = ERROR_KINDS.get(result.get("kind"), TeachRefused)
            raise self._failed(kind(result["error"]), done.stderr)
        return result

    @staticmethod
    def _failed(error: Exception, stderr: str = "") -> Exception:
        """The journal is where an operator looks: one line why, and the child's own output when it crashed."""
        log.error("teaching failed: %s", error)
        if stderr.strip() and "Traceback" in stderr:
            log.warning("the teach process's output:\n%s", stderr.strip()[-4000:])
        return error

    def switch(self) -> None:
        """Reload through the daemon's SIGHUP path and wait until the new head serves (or the reload failed)."""
        self.daemon.reload_and_wait(RELOAD_WAIT_S)
        self.head_stamp = self.stamp()
        if self.daemon.errors:
            raise TeachFailed(self.daemon.errors)

    def head_changed(self) -> bool:
        """Polled by the inference loop: True when the head store's current.json changed (a teach or undo from the
        command line)."""
        now = time.monotonic()
        if now < self.next_poll:
            return False
        self.next_poll = now + HEAD_POLL_S
        stamp = self.stamp()
        if stamp == self.head_stamp:
            return False
        self.head_stamp = stamp
        return True

    def stamp(self):
        store = self.daemon.head_store
        if store is None:
            return None
        try:
            stats = (store.root / revisions.CURRENT).stat()
            return str(store.root), stats.st_mtime_ns, stats.st_ino, stats.st_size
        except OSError:
            return str(store.root), None

    # ---- a new model: re-fit the head from the data set -------------------------------------------
    def refit_if_stale(self) -> None:
        """Wherever a new model starts serving (start, a SIGHUP with new models, a flipped format): when another
        model's store holds a taught head newer than anything this model's store has (none at all: a release with
        another model; an older one: the served format flipped back), this model's head is re-fitted from that
        head's data set, in a background thread (seconds; the head it has serves meanwhile). Said in the log and
        /status ``head.refit``. Never on the inference thread."""
        store = self.daemon.head_store
        if store is None or store.state_dir is None:
            return
        own = _changed(store.root / revisions.CURRENT)
        previous = [(root, meta) for root, meta in revisions.other_models(store.state_dir, store.model_sha256)
                    if _changed(root / revisions.CURRENT) > own]
        if not previous:
            return
        root, meta = max(previous, key=lambda item: _changed(item[0] / revisions.CURRENT))
        data = Path(meta["data"]) if isinstance(meta.get("data"), str) else self.dataset.root
        self.refit = {"state": "running", "from": str(root), "data": str(data), "labels": meta.get("labels"),
                      "started": round(time.time(), 3)}
        if not data.is_dir():
            self._refit_done("skipped", f"the data set {data} that the previous model's head was fitted on is gone: "
                                        "serving this release's own head. Record frames and teach again.")
            return
        log.info("a new model serves (sha256 %s...), its head older than %s: re-fitting its head from %s, as that "
                 "head was; its present head serves meanwhile", store.model_sha256[:12], root, data)
        threading.Thread(target=self._refit, args=(data,), name="edgecam-refit", daemon=True).start()

    def _refit(self, data: Path) -> None:
        try:
            result = self.teach(False, data)
        except Exception as error:  # noqa: BLE001 - a failed re-fit leaves the release's own head serving
            self._refit_done("failed", f"{error} Serving this release's own head.")
            return
        if result.get("accepted"):
            self._refit_done("done", f"head revision {result['revision']} re-fitted from {data}: "
                                     f"{result.get('reason', '')}")
        else:  # the gate chose this model's own head: say so in its store, so the next start does not re-fit again
            try:
                self.daemon.head_store.choose_own_head()
            except (OSError, RuntimeError) as error:
                log.warning("could not record the refused re-fit: %s", error)
            self._refit_done("refused", f"{result.get('reason', 'refused')} Serving this release's own head.")

    def _refit_done(self, state: str, reason: str) -> None:
        self.refit = dict(self.refit or {}, state=state, reason=reason, finished=round(time.time(), 3))
        (log.info if state == "done" else log.warning)("head re-fit for the new model %s: %s", state, reason)


def _changed(path: Path) -> int:
    """When PATH (a store's current.json) was last written, in nanoseconds; -1 when it is missing."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def last_line(text: str) -> str:
    """The last non-empty line of a child's stderr (a traceback's exception line), shortened: one clear line."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    line = lines[-1] if lines else "no output"
    return line if len(line) <= 300 else line[:297] + "..."


class TeachFailed(RuntimeError):
    """Teaching crashed or timed out (HTTP 500); the daemon's log has the details."""


class TeachStorage(OSError):
    """The head store or data set cannot be written: read-only, not the service's, or full (HTTP 507)."""


class RateLimited(RuntimeError):
    """Captures arrive faster than --capture-fps (HTTP 429)."""


class NoFrame(RuntimeError):
    """The camera has not delivered a frame yet (HTTP 503)."""


ERROR_KINDS = {"locked": TeachBusy, "storage": TeachStorage, "input": TeachRefused,  # the CLI's JSON "kind"
               "io": TeachFailed}  # a file that could not be read (not a full or read-only disk): HTTP 500
