"""Accuracy parity: the SavedModel against every TFLite model on the held-out images, and the thresholds.

Metrics per model (the SavedModel is the reference):
  accuracy         top-1 accuracy on the held-out labels
  accuracy_drop    SavedModel accuracy minus this model's, in percentage points (positive = worse), with its
                   unconditional 95% interval (drop_interval, Tango's score interval: device/paired.py) from
                   `losses` (the SavedModel was right, this model is not) and `gains` (the other way round)
                   out of all the images
  agreement        fraction of images whose top-1 class equals the SavedModel's
  confident_agreement  the same on the images where the SavedModel is sure: its top-1 probability leads the
                   runner-up by at least Thresholds.confident_margin; the other images are near ties, counted
                   (near_ties) and reported on their own line (near_tie_agreement)
  mean/max_abs_diff  mean and max of |p_model - p_savedmodel| over all images and classes
  latency_ms       median time of one invoke (set input, run, read output) on this machine

The gate asks what a user loses, not whether two classifiers agree where the float one itself is guessing:
a model fails when it flips images the SavedModel is sure of (agreement on confident images), when it loses
accuracy on these images (the measured drop), or when the images cannot rule out a large loss (the drop
interval's upper end). See README, "Parity".
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from device.layout import PARITY_JSON, PARITY_MD
from device.paired import accuracy_drop_interval, margins, mcnemar_p

# Agreement is counted on the images where the SavedModel's top-1 leads by at least CONFIDENT_MARGIN. A flip
# there needs the converted model to move probability by at least half the margin on each of two classes;
# rounding to 8 bits moves the output by 1/256 per step, and a healthy int8 conversion moves it by a few
# hundredths (README, "Parity", has the measurements). 0.2 keeps such images out of reach of rounding and in
# reach of a broken conversion (calibration images unlike the frames move whole classes).
CONFIDENT_MARGIN = 0.2
# float32 must agree exactly; float16 rounds weights only; dynamic-range and int8 quantize activations, and so
# does imx500 (the AI Camera's MCT-quantised model, measured fake-quantised on the host: convert/imx500.py).
DEFAULT_MIN_AGREEMENT = {"float32": 1.0, "float16": 0.995, "dynamic": 0.98, "int8": 0.98, "imx500": 0.98}
DEFAULT_MAX_ACCURACY_DROP = {"dynamic": 1.0, "int8": 1.0, "imx500": 1.0}  # percentage points, measured
DEFAULT_MAX_DROP_BOUND = {"dynamic": 3.0, "int8": 3.0, "imx500": 3.0}  # points, the 95% interval's upper end


@dataclass
class Thresholds:
    min_agreement: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIN_AGREEMENT))
    max_accuracy_drop: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MAX_ACCURACY_DROP))
    max_drop_bound: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MAX_DROP_BOUND))
    confident_margin: float = CONFIDENT_MARGIN

    def check(self, row: ModelParity) -> list[str]:
        """The broken thresholds of one row, as readable sentences (empty when it passes)."""
        broken = []
        minimum = self.min_agreement.get(row.format)
        if minimum is not None and row.confident_agreement is None and row.agreement is not None \
                and row.agreement < minimum:  # no confident image: every image is checked, none passes unchecked
            broken.append(f"no image has a float top-1 margin ≥ {self.confident_margin:g}, so agreement is checked "
                          f"on all {row.images} images: {row.agreement:.2%} < {minimum:.2%}")
        if minimum is not None and row.confident_agreement is not None and row.confident_agreement < minimum:
            flipped = row.confident_images - round(row.confident_agreement * row.confident_images)
            broken.append(f"agreement on confident images {row.confident_agreement:.2%} < {minimum:.2%} "
                          f"({flipped} of the {row.confident_images} images with a float top-1 margin "
                          f"≥ {self.confident_margin:g} differ)")
        drop = self.max_accuracy_drop.get(row.format)
        lost = drop is not None and row.accuracy_drop is not None and row.accuracy_drop > drop
        if lost:
            broken.append(f"accuracy drop {row.accuracy_drop:.2f} points > {drop:.2f} "
                          f"({row.losses} images lost, {row.gains} gained)")
        bound = self.max_drop_bound.get(row.format)
        if bound is not None and row.drop_interval and row.drop_interval[1] > bound and not lost:
            broken.append(f"the accuracy drop's 95% interval reaches {row.drop_interval[1]:.2f} points > "
                          f"{bound:.2f} ({row.losses + row.gains} of {row.images} images answered differently): "
                          "these images cannot rule out a larger loss; measure on more held-out images "
                          "(--test-data) or improve the model")
        return broken


@dataclass
class ModelParity:
    format: str
    file: str
    size_bytes: int
    images: int = 0
    accuracy: float | None = None
    accuracy_drop: float | None = None  # points
    agreement: float | None = None
    disagreements: int = 0
    losses: int = 0  # images the SavedModel gets right and this model wrong
    gains: int = 0  # the other way round
    drop_interval: list[float] | None = None  # [low, high] points, unconditional 95% (Tango score)
    drop_p_value: float | None = None  # one-sided exact McNemar: losses this many or more by chance
    confident_images: int = 0
    confident_agreement: float | None = None  # None when no image is confident
    near_ties: int = 0
    near_tie_agreement: float | None = None
    mean_abs_diff: float | None = None
    max_abs_diff: float | None = None
    latency_ms: float | None = None
    failures: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class ParityReport:
    bundle: str
    heldout_source: str
    images: int
    saved_model_accuracy: float | None
    saved_model_latency_ms: float | None
    thresholds: Thresholds
    models: list[ModelParity] = field(default_factory=list)
    conversion_seconds: float | None = None
    evaluation_seconds: float | None = None
    edgetpu: dict = field(default_factory=dict)
    quantization_debug: str | None = None
    notes: list[str] = field(default_factory=list)
    environment: dict = field(default_factory=dict)
    failed_try: str | None = None  # where a failed conversion was kept (the bundle itself is unchanged)
    calibration: str = ""  # what int8 was calibrated on (--calibration DIR, else the bundle's training images)

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.models)

    def row(self, fmt: str) -> ModelParity | None:
        return next((row for row in self.models if row.format == fmt), None)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["passed"] = self.passed
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_markdown(self) -> str:
        return render_markdown(self)


def compare(fmt: str, file: str, size_bytes: int, probabilities: np.ndarray, reference: np.ndarray,
            labels: np.ndarray, latencies_ms: list[float], thresholds: Thresholds) -> ModelParity:
    """One model's row: its probabilities against the SavedModel's on the same images."""
    predicted, expected = probabilities.argmax(axis=1), reference.argmax(axis=1)
    accuracy = float(np.mean(predicted == labels))
    reference_accuracy = float(np.mean(expected == labels))
    differences = np.abs(probabilities.astype(np.float64) - reference.astype(np.float64))
    same = predicted == expected
    losses = int(np.sum((expected == labels) & (predicted != labels)))
    gains = int(np.sum((expected != labels) & (predicted == labels)))
    confident = margins(reference) >= thresholds.confident_margin
    row = ModelParity(
        format=fmt, file=file, size_bytes=size_bytes, images=len(labels), accuracy=accuracy,
        accuracy_drop=round((reference_accuracy - accuracy) * 100, 6),
        agreement=float(np.mean(same)), disagreements=int(np.sum(~same)), losses=losses, gains=gains,
        drop_interval=[round(value, 6) for value in accuracy_drop_interval(losses, gains, len(labels))],
        drop_p_value=round(mcnemar_p(losses, gains), 6),
        confident_images=int(confident.sum()),
        confident_agreement=float(np.mean(same[confident])) if confident.any() else None,
        near_ties=int((~confident).sum()),
        near_tie_agreement=float(np.mean(same[~confident])) if (~confident).any() else None,
        mean_abs_diff=float(differences.mean()), max_abs_diff=float(differences.max()),
        latency_ms=float(np.median(latencies_ms)) if latencies_ms else None,
    )
    row.failures = thresholds.check(row)
    return row


def environment(threads) -> dict:
    import tensorflow as tf

    try:
        from importlib.metadata import version

        litert = version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - only for the report
        litert = "unknown"
    return {"python": platform.python_version(), "tensorflow": tf.__version__, "ai_edge_litert": litert,
            "numpy": np.__version__, "machine": platform.machine(), "processor": platform.processor() or "",
            "interpreter_threads": threads}


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _size(size: int) -> str:
    return f"{size / 1024:.1f} KiB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.2f} MiB"


def _losses_line(row: ModelParity) -> str:
    low, high = row.drop_interval or (0.0, 0.0)
    confident = ("no image is confident" if row.confident_agreement is None else
                 f"agreement on the {row.confident_images} confident images {row.confident_agreement:.2%}")
    return (f"{row.format}: accuracy drop {row.accuracy_drop:+.2f} points (95% interval {low:+.2f} to {high:+.2f}; "
            f"{row.losses} images lost, {row.gains} gained, McNemar p = {row.drop_p_value:.3g}); {confident}")


def _near_ties_line(row: ModelParity) -> str:
    if row.near_tie_agreement is None:
        return f"{row.format}: no near ties"
    return f"{row.format}: {row.near_ties} images, {row.near_tie_agreement:.2%} agree"


def render_markdown(report: ParityReport) -> str:
    lines = [
        f"# Accuracy parity: {report.bundle}",
        "",
        (f"{report.images} held-out images from {report.heldout_source}. Reference: the SavedModel "
        f"(accuracy {_percent(report.saved_model_accuracy)}). TFLite models run through the device's loader "
        "and preprocessing." + (f" int8 calibrated on {report.calibration}." if report.calibration else "")),
        "",
        ("| model | file | size | accuracy | Δ accuracy (points) | top-1 agreement | mean abs Δp | max abs Δp "
        "| latency ms (median) | status |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        (f"| SavedModel | saved_model/ | - | {_percent(report.saved_model_accuracy)} | - | - | - | - | "
        f"{'-' if report.saved_model_latency_ms is None else f'{report.saved_model_latency_ms:.2f}'} | reference |"),
    ]
    for row in report.models:
        status = "pass" if row.passed else "**FAIL**"
        if row.note:
            status = row.note
        lines.append(
            f"| {'**' + row.format + '**' if not row.passed else row.format} | {row.file} | {_size(row.size_bytes)} "
            f"| {_percent(row.accuracy)} "
            f"| {'-' if row.accuracy_drop is None else f'{row.accuracy_drop:+.2f}'} "
            f"| {_percent(row.agreement)} "
            f"| {'-' if row.mean_abs_diff is None else f'{row.mean_abs_diff:.5f}'} "
            f"| {'-' if row.max_abs_diff is None else f'{row.max_abs_diff:.5f}'} "
            f"| {'-' if row.latency_ms is None else f'{row.latency_ms:.2f}'} | {status} |"
        )
    measured = [row for row in report.models if row.agreement is not None]
    if measured:
        lines += ["", "## What a user loses", ""] + [f"- {_losses_line(row)}" for row in measured]
        lines += ["", f"Near ties (the SavedModel's top-1 leads its runner-up by less than "
                      f"{report.thresholds.confident_margin:g}; a flip there costs little and the accuracy drop "
                      "counts it):", ""] + [f"- {_near_ties_line(row)}" for row in measured]
    thresholds = report.thresholds
    lines += ["", "Thresholds: " + ", ".join(
        [f"{fmt} agreement on confident images ≥ {value:.1%}" for fmt, value in thresholds.min_agreement.items()]
        + [f"{fmt} accuracy drop ≤ {value:.2f} points" for fmt, value in thresholds.max_accuracy_drop.items()]
        + [f"{fmt} drop's 95% interval ≤ {value:.2f} points" for fmt, value in thresholds.max_drop_bound.items()]
    ) + f"; confident: a SavedModel top-1 margin ≥ {thresholds.confident_margin:g}."]
    failed = [row for row in report.models if not row.passed]
    if failed:
        lines += ["", "## Broken thresholds", ""]
        lines += [f"- **{row.format}**: {'; '.join(row.failures)}" for row in failed]
    else:
        lines += ["", "All thresholds hold."]
    if report.quantization_debug:
        lines += ["", f"Per-layer quantization error: {report.quantization_debug}"]
    if report.edgetpu:
        lines += ["", "## Edge TPU", ""] + [f"- {line}" for line in report.edgetpu.get("summary", [])]
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report.notes]
    timing = []
    if report.conversion_seconds is not None:
        timing.append(f"conversion {report.conversion_seconds:.1f} s")
    if report.evaluation_seconds is not None:
        timing.append(f"evaluation {report.evaluation_seconds:.1f} s")
    env = report.environment
    if env:
        timing.append(f"TensorFlow {env.get('tensorflow')}, ai-edge-litert {env.get('ai_edge_litert')}, "
                      f"{env.get('machine')}, interpreter threads: {env.get('interpreter_threads')}")
    if timing:
        lines += ["", "Measured on this machine: " + "; ".join(timing) + "."]
    return "\n".join(lines) + "\n"


def write_report(report: ParityReport, bundle: Path) -> None:
    from device.atomic import atomic_write

    atomic_write(Path(bundle) / PARITY_JSON, report.to_json())
    atomic_write(Path(bundle) / PARITY_MD, report.to_markdown())
