"""The only place in convert/ that touches the device's code. Parity is measured through it, so the parity
we report is the parity the device will see:

  decode      device.sources.ImagesSource.decode (Pillow, .convert("RGB")), as the images: source does
  preprocess  device.preprocess.prepare with the model's InputPlan (colour order, numpy bilinear resize,
              int8/uint8 quantization with the model's own scale and zero point)
  load + run  device.runtime.load_model(format, bundle): manifest lookup, sha256 check, runtime choice
  output      device.postprocess.dequantize

Nothing here re-implements any of it; convert/ only adds the float32 0..255 input the SavedModel and the
int8 calibration take, via the same prepare() with a float32 plan.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from convert.errors import ConvertError
from device import postprocess, preprocess
from device.runtime import load_model
from device.sources import ImagesSource


def iter_images(paths) -> Iterator[tuple[Path, np.ndarray | None]]:
    """(path, RGB uint8 [H, W, 3]) per file, decoded by the device's image source; None where it cannot."""
    paths = [Path(p) for p in paths]
    if not paths:
        return
    source = ImagesSource(paths=paths, loop=False)
    source.open()
    for path in paths:
        try:
            frame = source.decode(path)
        except Exception:  # noqa: BLE001 - e.g. Pillow's DecompressionBombError: unusable, the caller says so
            frame = None
        yield path, frame


def float_plan(spec) -> preprocess.InputPlan:
    """The SavedModel's (and the calibrator's) input: float32 0..255 at the manifest's size and colour order."""
    return preprocess.InputPlan(height=spec.height, width=spec.width, swap=spec.colour_order == "BGR",
                                dtype=np.dtype(np.float32))


def prepare(frame: np.ndarray, spec) -> np.ndarray:
    """RGB uint8 frame -> float32 [H, W, 3] 0..255, exactly as the device resizes it."""
    return preprocess.prepare(frame, float_plan(spec))[0]


class DeviceModel:
    """A TFLite model loaded as the device loads it; predict() takes RGB uint8 frames, returns probabilities."""

    def __init__(self, fmt: str, bundle: Path, threads: int | None = None, manifest=None):
        try:
            self.model = load_model(fmt, bundle=bundle, threads=threads, manifest=manifest)
        except ValueError as error:  # device.runtime.ModelError / ManifestError: the message says what to do
            raise ConvertError(f"The device loader cannot load the {fmt} model: {error}") from None
        self.plan = preprocess.InputPlan.for_model(self.model, manifest.input.colour_order if manifest else "RGB")
        self.latencies_ms: list = []
        self.embeddings: list = []  # each predicted frame's embedding, dequantized (none without an embedding output)

    def predict(self, frame: np.ndarray) -> np.ndarray:
        batch = preprocess.prepare(frame, self.plan)
        started = time.perf_counter()
        raw, embedding = self.model.run_both(batch)
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        if embedding is not None:  # the drift reference of the bundle's own head (device/drift.py)
            self.embeddings.append(postprocess.dequantize(embedding[0], self.model.embedding_scale,
                                                          self.model.embedding_zero_point))
        return postprocess.dequantize(raw[0], self.model.output_scale, self.model.output_zero_point)
