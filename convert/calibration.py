"""Calibration images for int8 quantization: find, check, pick, preprocess, and feed them with progress.

Images are decoded and resized by the device's own code (convert.device_side), so the int8 ranges are
calibrated on exactly the tensors the device will feed: RGB, bilinear half-pixel resize to the model's
input, float32 0..255 (the model normalises inside).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Callable

import numpy as np

from convert import device_side
from convert.errors import ConvertError
from device import layout
from device.layout import IMAGE_SUFFIXES, find_images  # noqa: F401  (find_images re-exported)

DEFAULT_SAMPLES = 200
TRAINING_IMAGES_NOTE = "the bundle's training images"  # how reports name the fallback
MIN_SAMPLES = 20


def pick_evenly(paths: Sequence[Path], count: int) -> list[Path]:
    """COUNT paths spread evenly over the sorted list (so every class folder / name prefix is represented),
    deterministic: the same folder always gives the same selection."""
    if len(paths) <= count:
        return list(paths)
    indices = np.linspace(0, len(paths) - 1, count).round().astype(int)
    return [paths[i] for i in indices]


def _fix_hint(folder: Path) -> str:
    return (f"Put at least {MIN_SAMPLES} representative images (what the camera will see, every class) "
            f"into {folder}, e.g. with 'make data', or point --calibration at another folder.")


def check_samples(samples: int, minimum: int = MIN_SAMPLES) -> None:
    if samples < minimum:
        raise ConvertError(
            f"--calibration-samples {samples} is below the minimum of {minimum} images needed to estimate "
            f"int8 ranges; use --calibration-samples {minimum} or more (default {DEFAULT_SAMPLES})."
        )


def load_calibration_images(folder, spec, samples: int = DEFAULT_SAMPLES, minimum: int = MIN_SAMPLES,
                            progress: bool = True) -> np.ndarray:
    """Read up to SAMPLES images from FOLDER, preprocessed as the device does: float32 [N, H, W, 3] 0..255.

    Raises ConvertError naming the folder and the fix when it is missing, empty, unreadable or too small.
    """
    folder = Path(folder)
    check_samples(samples, minimum)
    if not folder.is_dir():
        raise ConvertError(f"Calibration folder {folder} does not exist. {_fix_hint(folder)}")
    candidates = find_images(folder)
    if not candidates:
        raise ConvertError(
            f"Calibration folder {folder} is empty: no image files ({', '.join(IMAGE_SUFFIXES)}) in it or "
            f"below it. {_fix_hint(folder)}"
        )
    return prepare_images(candidates, spec, samples, str(folder), _fix_hint(folder), minimum, progress)


def prepare_images(candidates: Sequence[Path], spec, samples: int, where: str, fix: str,
                   minimum: int = MIN_SAMPLES, progress: bool = True) -> np.ndarray:
    """Decode and preprocess up to SAMPLES of CANDIDATES (spread evenly), as the device does; ConvertError
    naming WHERE and the FIX when too few of them are readable images."""
    chosen = pick_evenly(candidates, samples)
    images, unreadable = [], []
    meter = Progress("calibration images", len(chosen), enabled=progress)
    for path, frame in device_side.iter_images(chosen):
        if frame is None:
            unreadable.append(path)
        else:
            images.append(device_side.prepare(frame, spec))
        meter.step()
    meter.done()
    if not images:
        raise ConvertError(
            f"Calibration folder {where} holds no readable images ({len(unreadable)} file(s) could not be "
            f"decoded, e.g. {unreadable[0]}). {fix}"
        )
    if len(images) < minimum:
        raise ConvertError(
            f"Calibration folder {where} holds only {len(images)} readable image(s); int8 calibration needs "
            f"at least {minimum}. {fix}"
        )
    if unreadable:
        print(f"calibration: skipped {len(unreadable)} unreadable file(s) in {where}, e.g. {unreadable[0]}",
              file=sys.stderr)
    return np.stack(images).astype(np.float32)


def training_images(bundle: Path, manifest) -> tuple[Path, list[Path]]:
    """The bundle's training images (dataset.root and dataset.train_folder in the manifest), without the
    held-out ones heldout.txt lists: -> (their folder, sorted paths). ConvertError when they are gone."""
    root = Path(manifest.dataset.root)
    if manifest.dataset.root and not root.is_absolute():
        root = Path(bundle) / root
    folder = root / manifest.dataset.train_folder if manifest.dataset.train_folder else (
        root / layout.TRAIN_FOLDER if (root / layout.TRAIN_FOLDER).is_dir() else root)
    fix = ("Pass --calibration DIR with at least 20 representative images (what the camera will see, every "
           "class), or regenerate the training data where the manifest's dataset.root says.")
    if not manifest.dataset.root or not folder.is_dir():
        raise ConvertError(f"No --calibration folder was given and the bundle's training images ({folder}) are "
                           f"not there. {fix}")
    heldout = set()
    listing = Path(bundle) / (manifest.heldout_file or layout.HELDOUT)
    if listing.is_file():
        for line in listing.read_text(encoding="utf-8").splitlines():
            try:
                entry = layout.parse_heldout_line(line)
            except ValueError:
                continue  # convert/heldout.py reports a malformed list
            if entry:
                heldout.add(root / entry[1])
    paths = [path for path in find_images(folder) if path not in heldout]
    if not paths:
        raise ConvertError(f"No --calibration folder was given and the bundle's training folder {folder} holds no "
                           f"images. {fix}")
    return folder, paths


def representative_dataset(images: np.ndarray, progress: bool = True,
                           label: str = "calibrating") -> Callable[[], Iterator[list]]:
    """The converter's representative_dataset: a generator factory yielding [1, H, W, 3] samples in a fixed
    order, with a progress line (the converter runs it once per conversion)."""

    def generate():
        meter = Progress(label, len(images), enabled=progress)
        for image in images:
            yield [image[np.newaxis]]
            meter.step()
        meter.done()

    return generate


class Progress:
    """'calibrating: 120/200' on stderr: rewritten in place on a terminal, a few lines in a CI log."""

    def __init__(self, label: str, total: int, enabled: bool = True, stream=None):
        self.label, self.total, self.count = label, max(total, 1), 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and getattr(self.stream, "isatty", lambda: False)()
        self._next_percent = 25

    def step(self) -> None:
        self.count += 1
        if not self.enabled:
            return
        percent = 100 * self.count // self.total
        if self.tty:
            self.stream.write(f"\r{self.label}: {self.count}/{self.total} ({percent}%)")
            self.stream.flush()
        elif percent >= self._next_percent:
            self.stream.write(f"{self.label}: {self.count}/{self.total} ({percent}%)\n")
            self._next_percent = percent // 25 * 25 + 25

    def done(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
