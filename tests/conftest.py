"""Shared session fixtures: one tiny generated data set and one tiny trained bundle for the whole run.

Real TensorFlow training on real generated images; only small (64 px images, 48 px model, few images,
3 epochs) so the suite stays fast. Tests that modify a bundle copy it first (copy_bundle)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TINY_IMAGE_SIZE = 64   # generated images
TINY_MODEL_SIZE = 48   # model input: the pipeline resizes 64 -> 48, as a camera frame would be
TINY_TRAIN_PER_CLASS = 40
TINY_TEST_PER_CLASS = 12


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    from train.datagen import generate_dataset

    out = tmp_path_factory.mktemp("data") / "rps"
    generate_dataset(out, train_per_class=TINY_TRAIN_PER_CLASS, test_per_class=TINY_TEST_PER_CLASS,
                     size=TINY_IMAGE_SIZE, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_calibration_dir(tmp_path_factory) -> Path:
    from train.datagen import generate_calibration

    out = tmp_path_factory.mktemp("calibration") / "rps"
    generate_calibration(out, per_class=12, size=TINY_IMAGE_SIZE, seed=1000)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_data_dir, tmp_path_factory) -> Path:
    """A real bundle: the small CNN trained for 3 epochs on the tiny set and exported. Read-only: copy it
    (copy_bundle) before changing anything."""
    from train.api import train_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    train_bundle(tiny_data_dir, out, model="small", image_size=TINY_MODEL_SIZE, epochs=3, batch_size=16,
                 validation_split=0.1, seed=0, verbose=0)
    return out


@pytest.fixture(scope="session")
def bundle(tmp_path_factory) -> Path:
    """The device tests' bundle (tests/device_bundle.py): a small Keras model converted to every TFLite format,
    built once per session on first use. Read-only: copy it before changing anything."""
    import device_bundle

    return device_bundle.shared_bundle(tmp_path_factory)


def copy_bundle(bundle: Path, destination: Path) -> Path:
    shutil.copytree(bundle, destination)
    return destination
