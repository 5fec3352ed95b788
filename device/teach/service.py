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

from device.teach import revisions
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
    """Another teach or undo is running."""


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
        self.head_stamp = self._stamp()

    @property
    def dataset(self) -> Dataset:
        """Made on first use, so a daemon nobody teaches creates no folder (unless --keep-uncertain)."""
        if self._dataset is None:
            options = self.options
            root = options.dataset or default_root(self.daemon.classifier.manifest.name)
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

    def observe(self, frame, result: dict) -> None:
        """From the inference loop: keep a frame whose reading fell under the threshold (at most 1 a second)."""
        if self.options.keep_uncertain <= 0 or result.get("label") != "unknown":
            return
        now = time.monotonic()
        if now - self.last_uncertain < UNCERTAIN_INTERVAL_S:
            return
        self.last_uncertain = now
        try:
            self.dataset.keep(frame, result.get("raw_label", ""), result.get("confidence", 0.0),
                              self.daemon.options.source, self.model_name())
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
    def teach(self, force: bool = False) -> dict:
        """Run ``python -m device teach --json`` and switch to its head when accepted."""
        if not self.lock.acquire(blocking=False):
            raise TeachBusy("teaching is already running: wait for it to finish.")
        try:
            options = self.daemon.options
            model = options.model.split("@")[0]
            if "edgetpu" in model:  # the daemon holds the Edge TPU: embed with the same int8 graph on the CPU
                model = "int8"
            command = [sys.executable, "-m", "device", "teach", "--bundle", str(options.bundle), "--data",
                       str(self.dataset.root), "--model", model, "--json"]
            if options.threads:
                command += ["--threads", str(options.threads)]
            if force:
                command.append("--force")
            package_parent = str(Path(__file__).resolve().parent.parent.parent)
            environment = dict(os.environ, PYTHONPATH=os.pathsep.join(
                [package_parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=TEACH_TIMEOUT_S,
                                      env=environment, check=False)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"teaching took longer than {TEACH_TIMEOUT_S} s and was stopped; "
                                   "teach on fewer frames.") from None
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            try:
                result = json.loads(lines[-1])
            except (IndexError, ValueError):
                raise RuntimeError(f"teaching failed (exit {done.returncode}): "
                                   f"{done.stderr.strip()[-500:] or 'no output'}") from None
            if "error" in result:
                raise TeachRefused(result["error"])
            if result.get("accepted"):
                self.switch()
            return result
        finally:
            self.lock.release()

    def undo(self) -> dict:
        if not self.lock.acquire(blocking=False):
            raise TeachBusy("teaching is running: undo when it has finished.")
        try:
            try:
                revision = revisions.undo(self.daemon.options.bundle)
            except revisions.NothingToUndo as error:
                raise TeachRefused(str(error)) from None
            self.switch()
            return {"revision": revision, "labels": list(self.daemon.classifier.labels)}
        finally:
            self.lock.release()

    def switch(self) -> None:
        """Reload through the daemon's SIGHUP path and wait until the new head serves (or the reload failed)."""
        self.head_stamp = self._stamp()
        self.daemon.reload_and_wait(RELOAD_WAIT_S)
        if self.daemon.errors:
            raise RuntimeError(self.daemon.errors)

    def head_changed(self) -> bool:
        """Polled by the inference loop: True when heads/current.json changed (a teach or undo from the CLI)."""
        now = time.monotonic()
        if now < self.next_poll:
            return False
        self.next_poll = now + HEAD_POLL_S
        stamp = self._stamp()
        if stamp == self.head_stamp:
            return False
        self.head_stamp = stamp
        return True

    def _stamp(self):
        try:
            stats = (revisions.heads_dir(self.daemon.options.bundle) / revisions.CURRENT).stat()
            return stats.st_mtime_ns, stats.st_ino, stats.st_size
        except OSError:
            return None


class RateLimited(RuntimeError):
    """Captures arrive faster than --capture-fps (HTTP 429)."""


class NoFrame(RuntimeError):
    """The camera has not delivered a frame yet (HTTP 503)."""
