"""Where int8 quantization broke: a per-layer error report from TensorFlow's QuantizationDebugger.

Computed when int8 parity fails (or with --debug-quantization). The debugger re-quantizes the model with
the same calibration images, runs held-out images through it, and compares every quantized layer's
output with its float output. The key figure is RMSE / scale: the error in units of the layer's
quantization step. Uniform rounding alone gives about 1/sqrt(12) = 0.29; layers far above that (say > 1)
are where the int8 model loses the float model, usually because their calibrated range is wrong
(unrepresentative calibration images) or too wide (outliers).
Writes quantization_debug.csv (every layer, the debugger's raw dump) and quantization_debug.md (the
worst layers first) into the bundle, next to parity.md.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path

import numpy as np

from convert.calibration import representative_dataset
from convert.tflite import configure
from device.layout import QUANT_DEBUG_CSV, QUANT_DEBUG_MD

ROUNDING_ONLY = 1 / math.sqrt(12)
NO_OUTLIER = 1.0  # quantization steps: below this, no layer is badly calibrated


def layer_errors(serving, calibration_images: np.ndarray, debug_images: np.ndarray) -> list:
    """[{op_name, tensor_name, rmse_over_scale, ...}] sorted worst first."""
    import tensorflow as tf

    converter = configure(serving.converter(), "int8", representative_dataset(calibration_images, progress=False))
    converter.inference_input_type = tf.float32  # the debugger feeds float images and reads float outputs
    converter.inference_output_type = tf.float32

    def debug_dataset():
        for image in debug_images:
            yield [image[np.newaxis]]

    with warnings.catch_warnings():  # the debugger runs tf.lite.Interpreter, which warns it is deprecated
        warnings.simplefilter("ignore")
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=debug_dataset)
        debugger.run()
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    for row in rows:
        scale = float(row["scale"]) or float("nan")
        row["rmse_over_scale"] = math.sqrt(float(row["mean_squared_error"])) / scale
    rows.sort(key=lambda r: -r["rmse_over_scale"] if not math.isnan(r["rmse_over_scale"]) else 0.0)
    return rows


def write_quantization_debug(serving, calibration_images, debug_images, bundle: Path, top: int = 10,
                             log=print) -> Path:
    from device.atomic import atomic_write

    log(f"quantization debugger: per-layer error on {len(debug_images)} held-out images ...")
    rows = layer_errors(serving, calibration_images, debug_images)
    bundle = Path(bundle)
    fields = ["op_name", "tensor_name", "rmse_over_scale", "mean_squared_error", "max_abs_error", "mean_error",
              "stddev", "scale", "zero_point", "num_elements", "tensor_idx"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(bundle / QUANT_DEBUG_CSV, text.getvalue())
    lines = [
        "# int8 quantization error per layer (worst first)", "",
        (f"RMSE / scale = error in quantization steps; rounding alone gives ~{ROUNDING_ONLY:.2f}. Layers far above "
        "that lost the float model: check that the calibration images look like the camera's (all classes, "
        "real lighting), and that there are enough of them."), "",
        "| rank | op | layer (tensor) | RMSE / scale | max abs error | scale | zero point |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for rank, row in enumerate(rows[:top], start=1):
        lines.append(f"| {rank} | {row['op_name']} | {row['tensor_name'].split(';')[0]} | "
                     f"{row['rmse_over_scale']:.3f} | {float(row['max_abs_error']):.4g} | {float(row['scale']):.4g} "
                     f"| {row['zero_point']} |")
    if rows and rows[0]["rmse_over_scale"] <= NO_OUTLIER:
        lines += ["", (f"No layer stands out (worst {rows[0]['rmse_over_scale']:.2f} quantization steps): the int8 "
                  "error is rounding everywhere. If int8 still disagrees with the SavedModel, the float model's "
                  "top classes are near ties on those images (compare mean/max abs Δp in parity.md).")]
    lines += ["", f"All {len(rows)} layers: {QUANT_DEBUG_CSV}."]
    path = bundle / QUANT_DEBUG_MD
    atomic_write(path, "\n".join(lines) + "\n")
    if rows:
        worst = rows[0]
        log(f"quantization debugger: worst layer {worst['tensor_name'].split(';')[0]} ({worst['op_name']}), "
            f"RMSE/scale {worst['rmse_over_scale']:.2f} -> {path}")
    return path
