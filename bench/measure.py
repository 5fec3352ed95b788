"""The measurements behind ``make bench``. Each returns plain numbers; bench/__main__.py makes the table.

- Latency, side by side in one process and one interpreter: the raw loop (set_tensor / invoke /
  get_tensor, the limit) interleaved in rounds with the daemon's pipeline (Classifier.process), for frames
  already at the model's size and for 640x480 frames, and with the daemon's outputs added. Medians.
- int8 against float32: raw invoke speed-up and file size ratio.
- The daemon as a real subprocess: peak RSS (VmHWM in /proc/PID/status), cold start (process start to the
  first result line on stdout), RSS growth over 10,000 frames from the image source.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def machine() -> str:
    """One line: CPU model, cores, OS, Python, numpy, interpreter runtime."""
    cpu = platform.processor() or platform.machine()
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
        info = {key.strip(): value.strip() for key, value in info.items()}
        board = info.get("Model", "")  # a Raspberry Pi names itself here
        cpu = ", ".join(v for v in (board, info.get("model name") or info.get("Hardware", "")) if v) or cpu
    except OSError:
        pass
    from device.runtime import import_runtime

    runtime = import_runtime()[0]
    version = _version(runtime.replace("_", "-"))
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}, numpy {np.__version__}, {runtime} {version}")


def _version(distribution: str) -> str:
    try:
        from importlib.metadata import version

        return version(distribution)
    except Exception:  # noqa: BLE001 - only a label
        return "?"


# ---- in-process latency ----------------------------------------------------------------------
class NullStream:
    def write(self, text):
        return len(text)

    def flush(self):
        pass


def latency(bundle: Path, model: str, threads: int, frames: int = 1000, rounds: int = 10) -> dict:
    """Median per-frame milliseconds: the raw interpreter; the pipeline (Classifier.process: preprocess,
    invoke, dequantize, smoothing, top-k, threshold, the result dict - what each result's latency_ms
    measures) for frames at the model's size and at 640x480; and the daemon's whole per-frame step with its
    outputs (Daemon.handle: + a stdout JSON line, stats, SSE publish) at the model's size."""
    from device import drift
    from device.daemon import Daemon, Options

    daemon = Daemon(Options(bundle=str(bundle), model=model, source="images:unused", threads=threads,
                            smoothing=5, threshold=0.5, emit="every", http="off"), stdout=NullStream())
    daemon.classifier = daemon.load()
    daemon.open_outputs()
    loaded = daemon.classifier.model
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(loaded.height, loaded.width, 3), dtype=np.uint8)
    large = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    batch = np.zeros(loaded.input_shape, dtype=loaded.input_dtype)
    interpreter, input_index, output_index = loaded.interpreter, loaded.input_index, loaded.output_index

    def raw():
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        interpreter.get_tensor(output_index)

    classifier = daemon.classifier
    cases = {"raw": raw, "pipeline_model_size": lambda: classifier.process(small),
             "pipeline_640x480": lambda: classifier.process(large),
             "with_outputs_model_size": lambda: daemon.handle(small)}
    if classifier.drift is not None and classifier.drift.reference is not None:  # device/drift.py, after a frame
        cases["drift_step"] = lambda: drift.observe(classifier.drift, classifier)
    times = {name: [] for name in cases}
    for case in cases.values():  # warm-up: caches, resize tables, XNNPACK packing
        for _ in range(20):
            case()
    per_round = max(1, frames // rounds)
    for _ in range(rounds):
        for name, case in cases.items():
            for _ in range(per_round):
                start = time.perf_counter()
                case()
                times[name].append(time.perf_counter() - start)
    daemon.outputs.close()
    result = {name: statistics.median(values) * 1000 for name, values in times.items()}
    result["size_bytes"] = loaded.path.stat().st_size
    result["runtime"] = loaded.runtime
    return result


def formats(bundle: Path, frame: tuple, repetitions: int = 200, seconds: float = 60.0) -> tuple:
    """Every model format of the bundle with 1 to all cores, measured the way ``python -m device tune`` measures
    (device/tune.py: the daemon's pipeline, interleaved rounds, median and IQR) -> (rows, the tuner's choice
    among the formats that passed parity or None, {format: why excluded})."""
    from device import tune
    from device.layout import EDGETPU_FORMAT
    from device.manifest import load_manifest

    manifest = load_manifest(bundle)
    excluded = {fmt: why for fmt, why in tune.exclusions(manifest, edgetpu=False).items() if why}
    measurable = [fmt for fmt in manifest.models if fmt != EDGETPU_FORMAT]  # an Edge TPU is not measured here
    rows = tune.measure(bundle, manifest, measurable, list(range(1, tune.usable_cores() + 1)), frame,
                        repetitions, seconds)
    return rows, tune.choose([row for row in rows if row.format not in excluded])[0], excluded


# ---- the daemon as a subprocess -----------------------------------------------------------------
class DaemonRun:
    """``python -m device`` with its stdout lines counted by a reader thread."""

    def __init__(self, bundle: Path, source: str, model: str, threads: int, extra=()):
        command = [sys.executable, "-m", "device", "--bundle", str(bundle), "--model", model, "--source", source,
                   "--max-fps", "0", "--threads", str(threads), "--http", "127.0.0.1:0", *extra]
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.first_result = None
        self.count = 0
        self.lock = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for _ in self.process.stdout:
            with self.lock:
                if self.first_result is None:
                    self.first_result = time.monotonic() - self.started
                self.count += 1
                self.lock.notify_all()

    def wait_for(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.count < count:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the daemon stopped or stalled after {self.count} results "
                                       f"(exit code {self.process.poll()}); run it by hand to see why")
                self.lock.wait(0.5)

    def memory_kb(self, key: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"{key} not in /proc/{self.process.pid}/status")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def frame_folder(bundle: Path, size: tuple, count: int = 16) -> Path:
    """A temporary folder of ``count`` PNG frames at (width, height), from the held-out images when there
    are any (else noise)."""
    from PIL import Image

    folder = Path(tempfile.mkdtemp(prefix=f"edgecam-bench-{size[0]}x{size[1]}-"))
    sources = heldout_paths(bundle)[:count]
    rng = np.random.default_rng(0)
    for index in range(count):
        if index < len(sources):
            image = Image.open(sources[index]).convert("RGB").resize(size, Image.BILINEAR)
        else:
            image = Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))
        image.save(folder / f"{index:03d}.png")
    return folder


def heldout_paths(bundle: Path) -> list:
    from device.manifest import load_manifest

    manifest = load_manifest(bundle)
    listing = Path(bundle) / manifest.heldout_file
    if not listing.is_file():
        return []
    root = Path(manifest.dataset.root)
    root = root if root.is_absolute() else Path(bundle) / root
    paths = [root / line.split("\t", 1)[1] for line in listing.read_text().splitlines() if "\t" in line]
    return [p for p in paths if p.is_file()]


def cold_start(bundle: Path, folder: Path, threads: int, runs: int = 3) -> float:
    """Median seconds from process start to the first result on stdout (int8)."""
    seconds = []
    for _ in range(runs):
        run = DaemonRun(bundle, f"images:{folder}", "int8", threads)
        try:
            run.wait_for(1)
            seconds.append(run.first_result)
        finally:
            run.stop()
    return statistics.median(seconds)


def peak_rss(bundle: Path, folder: Path, threads: int, frames: int = 500) -> float:
    """VmHWM (MB) of the daemon serving the int8 model on 640x480 frames, HTTP API on."""
    run = DaemonRun(bundle, f"images:{folder}", "int8", threads)
    try:
        run.wait_for(frames)
        return run.memory_kb("VmHWM") / 1024
    finally:
        run.stop()


def rss_growth(bundle: Path, folder: Path, threads: int, frames: int = 10_000, warmup: int = 500) -> tuple:
    """(RSS MB after warm-up, RSS growth MB over ``frames`` more frames) from the looping image source."""
    run = DaemonRun(bundle, f"images:{folder}", "int8", threads, extra=("--smoothing", "5"))
    try:
        run.wait_for(warmup)
        before = run.memory_kb("VmRSS")
        run.wait_for(warmup + frames, timeout=600)
        after = run.memory_kb("VmRSS")
        return before / 1024, (after - before) / 1024
    finally:
        run.stop()


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
