"""A converted bundle with an embedding output, for the teach tests: tests/device_bundle.py's tiny colour
model, converted by the real convert_bundle (float32 and int8; parity skipped: test_convert covers it).
Built once per test session on first use. Read-only: copy it (device_bundle.copy_bundle) before teaching."""

from __future__ import annotations

import shutil
from pathlib import Path

import device_bundle

_BUILT: dict = {}


def shared_teach_bundle(tmp_path_factory) -> Path:
    key = str(tmp_path_factory.getbasetemp())
    if key not in _BUILT:
        from convert.api import convert_bundle

        source = device_bundle.shared_bundle(tmp_path_factory)
        out = tmp_path_factory.mktemp("teach-bundle") / "tiny"
        shutil.copytree(source, out, ignore=shutil.ignore_patterns("data", "tflite"))
        convert_bundle(out, formats="float32,int8", calibration_dir=source / "data" / "train", skip_parity=True,
                       progress=False, log=lambda message: None)
        _BUILT[key] = out
    return _BUILT[key]


def images_root(tmp_path_factory) -> Path:
    """The tiny bundle's training images (class folders paper/rock/scissors, 40x40 PNG)."""
    return device_bundle.shared_bundle(tmp_path_factory) / "data"
