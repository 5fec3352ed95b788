"""``python -m device tune --bundle B``: which of the bundle's models, with how many interpreter threads, is
fastest on this device - measured here, never assumed (docs/tuning.md).

- Candidates: every model format whose parity passed (:func:`exclusions` reads the manifest's records), never
  one that failed or was not measured; the Edge TPU model only with an Edge TPU present. Each with 1 to
  the usable cores interpreter threads.
- Measured through the daemon's own per-frame step (device/pipeline.Classifier.process: preprocessing,
  invoke, dequantize, smoothing, top-k) on frames of the source's size (:func:`frame_size`). The candidates of
  one thread count are loaded together and measured in interleaved rounds (a block of frames each, the
  first untimed), so a background load slows them alike; WARMUP_FRAMES first. Per candidate: the median and
  the interquartile range, over up to --repetitions frames or until --seconds are spent.
- The choice (:func:`choose`): per format, the lowest median, or fewer threads within TOLERANCE of it (they
  leave cores to the camera and the outputs); int8 is kept unless another format is faster beyond the measured
  noise (the medians differ by more than both IQRs together and by MIN_MARGIN).
- The record (choice, whole table, device, date) goes atomically to STATE/tuning/KEY.json; KEY hashes the
  candidates' sha256s, the device (CPU model, cores, runtime and version, Edge TPU present or not) and the
  frame size, so a new bundle, runtime or board finds no record and is tuned again. Never into the bundle.
- The daemon reads the record through its serving plan, device/serving.py (--model and --threads win over it;
  a record is validated against the bundle before use).

Lean: numpy and the interpreter only (it runs on the device). Exit status: 0 tuned; 1 nothing to tune (no
format passed parity, or none could be measured); 2 bad input (bundle, --source, state folder).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from device.atomic import atomic_write
from device.layout import EDGETPU_FORMAT
from device.manifest import MODEL_FORMATS, PARITY_PASSED, load_manifest
from device.state import TUNING, device_state_dir

SCHEMA = "edgecam-tuning/1"
TOLERANCE = 0.05  # fewer threads win when they are at most this much slower than the fastest
MIN_MARGIN = 0.05  # another format replaces int8 only when faster by this much of int8's time, beyond the noise
WARMUP_FRAMES = 3
BLOCK_FRAMES = 5  # timed frames per candidate per round (after one untimed frame)
MIN_REPETITIONS = 5
DEFAULT_REPETITIONS = 200
DEFAULT_SECONDS = 20.0
FALLBACK_FRAME = (640, 480)  # (width, height) of a USB camera or video file, whose size is not known here
DEFAULT_FORMAT = "int8"  # what the daemon serves when nothing was tuned (and before the tuner existed)


@dataclass
class Row:
    """One candidate's measurement (milliseconds per frame)."""

    format: str
    threads: int
    median_ms: float | None = None
    p25_ms: float | None = None
    p75_ms: float | None = None
    frames: int = 0
    error: str | None = None

    @property
    def iqr_ms(self) -> float | None:
        return None if self.median_ms is None else round(self.p75_ms - self.p25_ms, 4)

    def to_dict(self) -> dict:
        return dict(asdict(self), iqr_ms=self.iqr_ms)


@dataclass
class Plan:
    """What a tuning of BUNDLE here would measure, and the record KEY it would be filed under."""

    candidates: list  # formats whose parity passed
    excluded: dict  # format -> why it is not measured
    models: dict  # candidate format -> sha256
    device: dict
    frame: tuple  # (width, height)
    key: str


# ---- what may be measured ---------------------------------------------------------------------
def exclusions(manifest, edgetpu: bool) -> dict:
    """format -> None when its parity passed (a candidate), else the reason it is left out. A format's own
    record (``ModelFile.parity``) decides; a bundle converted before those were recorded counts a format as
    passed when the bundle's parity passed and the format was measured. The Edge TPU model is the int8 model
    compiled, and its parity needs an Edge TPU to measure: it follows int8's verdict, and needs the device."""
    verdicts = {}
    for fmt in sorted(manifest.models, key=MODEL_FORMATS.index):
        entry = manifest.models[fmt]
        if fmt == EDGETPU_FORMAT:
            continue
        if entry.parity:
            passed = entry.parity == PARITY_PASSED
            why = f"parity {entry.parity}"
        else:
            passed = manifest.parity == PARITY_PASSED and entry.agreement is not None
            why = f"parity not measured (bundle parity: {manifest.parity or 'none'})"
        verdicts[fmt] = None if passed else why
    if EDGETPU_FORMAT in manifest.models:
        if verdicts.get("int8", "no int8 model") is not None:
            verdicts[EDGETPU_FORMAT] = f"follows int8, whose {verdicts.get('int8', 'model is missing')}"
        else:
            verdicts[EDGETPU_FORMAT] = None if edgetpu else "no Edge TPU on this device"
    return verdicts


# ---- the device and the frames ---------------------------------------------------------------------
def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The board and CPU as /proc/cpuinfo names them (a Raspberry Pi's "Model" line; x86's "model name")."""
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    info = {}
    for line in lines:
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    names = [info.get("Model", ""), info.get("model name") or info.get("Hardware", "")]
    if info.get("CPU part") and not names[1]:
        names[1] = f"CPU part {info['CPU part']}"  # Arm cores: 0xd08 Cortex-A72 (Pi 4), 0xd0b Cortex-A76 (Pi 5)
    return ", ".join(name for name in names if name) or platform.machine()


def device_facts(runtime: str | None = None) -> dict:
    """What a tuning depends on besides the models: CPU, cores, runtime and version, Edge TPU present."""
    from device.doctor import find_edgetpu_devices
    from device.opversions import runtime_version
    from device.runtime import import_runtime

    name = import_runtime(runtime)[0]
    return {"cpu": cpu_model(), "machine": platform.machine(), "cores": usable_cores(), "runtime": name,
            "runtime_version": runtime_version(name) or "unknown", "edgetpu": bool(find_edgetpu_devices())}


def frame_size(source: str, manifest) -> tuple:
    """(width, height) of the frames SOURCE gives: images:DIR its first image's (from the header); picamera2
    the model input (the ISP resizes for free); anything else 640x480."""
    kind, _, argument = str(source).partition(":")
    if kind == "picamera2":
        return manifest.input.width, manifest.input.height
    if kind == "images":
        from PIL import Image

        from device.sources import IMAGE_SUFFIXES

        folder = Path(argument)
        if not folder.is_dir():
            raise ValueError(f"--source {source}: no such folder; give the folder the daemon reads")
        for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
            try:
                with Image.open(path) as image:
                    return tuple(image.size)
            except (OSError, ValueError, SyntaxError):
                continue
        raise ValueError(f"--source {source}: no readable image in it, so the frame size is unknown; "
                         "add images or give --frame-size WxH")
    return FALLBACK_FRAME


def make_plan(bundle, manifest, source: str = "picamera2", frame: tuple | None = None,
              runtime: str | None = None) -> Plan:
    """Raise ModelError (no runtime) or ValueError (a bad --source)."""
    device = device_facts(runtime)
    verdicts = exclusions(manifest, device["edgetpu"])
    candidates = [fmt for fmt, why in verdicts.items() if why is None]
    models = {fmt: manifest.models[fmt].sha256 for fmt in candidates}
    frame = tuple(frame or frame_size(source, manifest))
    return Plan(candidates, {f: why for f, why in verdicts.items() if why}, models, device, frame,
                record_key(models, device, frame))


def record_key(models: dict, device: dict, frame: tuple) -> str:
    """16 hex digits over everything a measurement depends on: another model, CPU, runtime (or version), Edge TPU
    or frame size gives another key, so the daemon finds no record and tunes again."""
    text = json.dumps({"models": models, "device": device, "frame": list(frame)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- measuring --------------------------------------------------------------------------------------
def measure(bundle, manifest, formats: list, thread_counts: list, frame: tuple,
            repetitions: int = DEFAULT_REPETITIONS, seconds: float = DEFAULT_SECONDS, progress=None) -> list:
    """-> one Row per (format, threads), in that order. The formats of one thread count are loaded together and
    measured in interleaved rounds until each has REPETITIONS frames or their share of SECONDS is spent
    (never fewer than MIN_REPETITIONS). A candidate that cannot be loaded gets its error, not a time."""
    from device.pipeline import Classifier
    from device.runtime import load_model

    pixels = np.random.default_rng(0).integers(0, 256, size=(frame[1], frame[0], 3), dtype=np.uint8)
    rows = {(fmt, threads): Row(fmt, threads) for fmt in formats for threads in thread_counts}
    share = seconds / max(1, len(thread_counts))
    for threads in thread_counts:
        cases = []
        for fmt in formats:
            row = rows[fmt, threads]
            try:
                model = load_model(fmt, bundle, threads=threads, manifest=manifest)
                classifier = Classifier(model, manifest, smoothing=5, threshold=0.5, k=3)  # the daemon's defaults
                for _ in range(WARMUP_FRAMES):
                    classifier.process(pixels)
            except Exception as error:  # noqa: BLE001 - a candidate that cannot run here is reported, not fatal
                row.error = f"{type(error).__name__}: {error}"
                continue
            cases.append((row, classifier, []))
        deadline = time.monotonic() + share
        while cases:
            for _, classifier, times in cases:
                classifier.process(pixels)  # untimed: the first frame after another interpreter ran
                for _ in range(BLOCK_FRAMES):
                    start = time.perf_counter()
                    classifier.process(pixels)
                    times.append((time.perf_counter() - start) * 1000.0)
            done = min(len(times) for _, _, times in cases)
            if done >= repetitions or (done >= MIN_REPETITIONS and time.monotonic() >= deadline):
                break
        for row, _, times in cases:
            p25, median, p75 = np.percentile(times, [25, 50, 75])
            row.median_ms, row.p25_ms, row.p75_ms = (round(float(v), 4) for v in (median, p25, p75))
            row.frames = len(times)
            if progress:
                progress(f"{row.format} with {threads} thread{'s' * (threads > 1)}: {row.median_ms:.3f} ms "
                         f"(IQR {row.iqr_ms:.3f}, {row.frames} frames)")
        del cases  # free this thread count's interpreters before loading the next
    return list(rows.values())


def fewest_threads(rows: list, tolerance: float = TOLERANCE) -> Row | None:
    """The fastest measured row; among those within TOLERANCE of it, the one with the fewest threads."""
    measured = [row for row in rows if row.median_ms is not None]
    if not measured:
        return None
    fastest = min(row.median_ms for row in measured)
    close = [row for row in measured if row.median_ms <= fastest * (1 + tolerance)]
    return min(close, key=lambda row: (row.threads, row.median_ms))


def beyond_noise(row: Row, baseline: Row, margin: float = MIN_MARGIN) -> bool:
    """ROW is faster than BASELINE by more than their interquartile ranges together and by MARGIN of it."""
    gap = baseline.median_ms - row.median_ms
    return gap > row.iqr_ms + baseline.iqr_ms and gap > margin * baseline.median_ms


def choose(rows: list, tolerance: float = TOLERANCE, margin: float = MIN_MARGIN) -> tuple:
    """-> (the row to serve or None, why). Each format's row: its fastest thread count, or fewer threads within
    TOLERANCE. int8 (DEFAULT_FORMAT) is kept unless another format is faster beyond the measured noise
    (:func:`beyond_noise`): a busy machine's jitter never switches formats. Without an int8 row, the fastest."""
    best = {}
    for row in rows:
        best.setdefault(row.format, []).append(row)
    best = {fmt: fewest_threads(group, tolerance) for fmt, group in best.items()}
    best = {fmt: row for fmt, row in best.items() if row is not None}
    if not best:
        return None, "no candidate could be measured"
    baseline = best.get(DEFAULT_FORMAT)
    if baseline is None:
        chosen = min(best.values(), key=lambda row: row.median_ms)
        return chosen, f"the fastest measured ({DEFAULT_FORMAT} was not measured)"
    others = [row for fmt, row in best.items() if fmt != DEFAULT_FORMAT]
    faster = [row for row in others if beyond_noise(row, baseline, margin)]
    if not faster:
        if not others:
            return baseline, f"{DEFAULT_FORMAT}, the only format measured"
        closest = min(others, key=lambda row: row.median_ms)
        return baseline, (f"kept {DEFAULT_FORMAT}: no other format was faster beyond the measured noise (closest "
                          f"{closest.format} {closest.median_ms:.3f} ms, IQR {closest.iqr_ms:.3f}, against "
                          f"{DEFAULT_FORMAT} {baseline.median_ms:.3f} ms, IQR {baseline.iqr_ms:.3f})")
    chosen = min(faster, key=lambda row: row.median_ms)
    return chosen, (f"{chosen.format} is faster than {DEFAULT_FORMAT} beyond the measured noise "
                    f"({chosen.median_ms:.3f} against {baseline.median_ms:.3f} ms: more than both IQRs together "
                    f"and {margin:.0%})")


# ---- the record ----------------------------------------------------------------------------------
def record_path(state_dir, key: str) -> Path:
    return Path(state_dir) / TUNING / f"{key}.json"


def build_record(bundle, manifest, plan: Plan, rows: list, chosen: Row, source: str, seconds: float,
                 reason: str = "") -> dict:
    return {"schema": SCHEMA, "key": plan.key, "bundle": str(Path(bundle).resolve()), "name": manifest.name,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "models": plan.models,
            "device": plan.device, "frame": list(plan.frame), "source": source, "seconds": seconds,
            "tolerance": TOLERANCE, "margin": MIN_MARGIN, "excluded": plan.excluded, "choice": chosen.to_dict(),
            "reason": reason,
            "table": [row.to_dict() for row in rows]}


def write_record(state_dir, record: dict) -> Path:
    """Atomically (device/atomic.py), readable by the service user when root wrote it (install.sh)."""
    return atomic_write(record_path(state_dir, record["key"]),
                        json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_record(state_dir, key: str) -> dict | None:
    """The record filed under KEY, or None (none yet, unreadable, or not a tuning record)."""
    try:
        record = json.loads(record_path(state_dir, key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA or record.get("key") != key \
            or not isinstance(record.get("choice"), dict) or not isinstance(record.get("table"), list):
        return None
    return record


# ---- the command ------------------------------------------------------------------------------------
def format_table(rows: list, chosen: Row | None) -> str:
    lines = [f"{'FORMAT':<10}{'THREADS':>8}{'MEDIAN MS':>12}{'IQR MS':>10}{'FRAMES':>8}"]
    for row in rows:
        mark = "  <- chosen" if row is chosen else ""
        if row.median_ms is None:
            lines.append(f"{row.format:<10}{row.threads:>8}  not measured: {row.error}")
        else:
            lines.append(f"{row.format:<10}{row.threads:>8}{row.median_ms:>12.3f}{row.iqr_ms:>10.3f}"
                         f"{row.frames:>8}{mark}")
    return "\n".join(lines)


def parse_frame(text: str) -> tuple:
    width, _, height = text.lower().partition("x")
    try:
        size = int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT, e.g. 640x480, got {text}") from None
    if min(size) < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return size


def build_parser() -> argparse.ArgumentParser:
    from device.validators import positive_float, positive_int

    parser = argparse.ArgumentParser(
        prog="python -m device tune", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Measure every model format of the bundle whose parity passed, with 1 to all cores, through "
                    "the daemon's own pipeline; keep the fastest (fewer threads within 5%) in the state folder, "
                    "where the daemon finds it when neither --model nor --threads is given.")
    add = parser.add_argument
    add("--bundle", required=True, default=argparse.SUPPRESS, help="bundle folder (holds manifest.json)")
    add("--state-dir", default=argparse.SUPPRESS,
        help="state folder; the record goes to STATE/tuning/ (default: $EDGECAM_STATE_DIR, else systemd's "
             "$STATE_DIRECTORY, else /var/lib/edgecam when this user may write it; without one the table is "
             "printed and nothing is kept)")
    add("--source", default="picamera2",
        help="the daemon's --source: it sets the frame size (images:DIR its first image, picamera2 the model "
             "input, anything else 640x480)")
    add("--frame-size", type=parse_frame, default=argparse.SUPPRESS, help="WxH frames instead (e.g. 1280x720)")
    add("--repetitions", type=positive_int, default=DEFAULT_REPETITIONS, help="most timed frames per candidate")
    add("--seconds", type=positive_float, default=DEFAULT_SECONDS,
        help="time for the measuring (each candidate still gets 5 frames)")
    add("--quiet", action="store_true", help="print only the choice")
    return parser


def main(argv: list | None = None) -> int:
    args = build_parser().parse_args(argv)
    say = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr))
    state_dir = device_state_dir(getattr(args, "state_dir", None))  # the daemon's and teach's, /var/lib/edgecam too
    try:
        manifest = load_manifest(args.bundle)
        plan = make_plan(args.bundle, manifest, args.source, getattr(args, "frame_size", None))
    except ValueError as error:  # ManifestError, ModelError (no runtime), a bad --source
        print(f"edgecam tune: {error}", file=sys.stderr)
        return 2
    device = plan.device
    excluded = "; ".join(f"{fmt}: {why}" for fmt, why in plan.excluded.items()) or "none"
    if not plan.candidates:
        print(f"edgecam tune: {args.bundle}: no model format passed parity (excluded: {excluded}), so there is "
              f"nothing to choose from; the daemon serves {DEFAULT_FORMAT}. Run python -m convert on the bundle "
              "(without --skip-parity) and deploy it again.", file=sys.stderr)
        return 1
    thread_counts = list(range(1, device["cores"] + 1))
    say(f"edgecam tune: {manifest.name}: {', '.join(plan.candidates)} x {thread_counts[0]}-{thread_counts[-1]} "
        f"threads, {plan.frame[0]}x{plan.frame[1]} frames, {device['cpu']}, {device['runtime']} "
        f"{device['runtime_version']}{', Edge TPU' if device['edgetpu'] else ''} (excluded: {excluded})")
    if manifest.imx500 is not None:
        from device.imx500 import not_tuned

        say(f"edgecam tune: {not_tuned(manifest)}")
    rows = measure(args.bundle, manifest, plan.candidates, thread_counts, plan.frame, args.repetitions,
                   args.seconds, progress=say)
    chosen, reason = choose(rows)
    if not args.quiet:
        print(format_table(rows, chosen))
    if chosen is None:
        print("edgecam tune: no candidate could be measured (see the errors above)", file=sys.stderr)
        return 1
    print(f"chosen: {chosen.format} with {chosen.threads} thread{'s' * (chosen.threads > 1)}, "
          f"{chosen.median_ms:.3f} ms per frame (IQR {chosen.iqr_ms:.3f}; fewest threads within "
          f"{TOLERANCE:.0%} of the fastest): {reason}")
    if state_dir is None:
        print("edgecam tune: no state folder (--state-dir, $EDGECAM_STATE_DIR): nothing kept; the daemon "
              f"serves {DEFAULT_FORMAT} unless told --model/--threads", file=sys.stderr)
        return 0
    record = build_record(args.bundle, manifest, plan, rows, chosen, args.source, args.seconds, reason)
    try:
        path = write_record(state_dir, record)
    except OSError as error:
        print(f"edgecam tune: cannot write {record_path(state_dir, plan.key)} ({error.strerror or error}): make "
              f"the state folder writable by this user, or give another with --state-dir", file=sys.stderr)
        return 2
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
