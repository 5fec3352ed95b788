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

# ---- no test writes into a real state folder (tests/test_state_isolation.py) ---------------------------
# An exported $EDGECAM_STATE_DIR (or systemd's $STATE_DIRECTORY) leaves the environment for the whole session,
# so neither this process nor any subprocess a test starts finds it; a test that wants a state folder names
# one under its tmp_path. The folders a run could still reach are watched: a test after which one changed fails.
EXPORTED_STATE = [os.environ.pop(name) for name in ("EDGECAM_STATE_DIR", "STATE_DIRECTORY") if name in os.environ]
WATCHED_STATE = [Path("/var/lib/edgecam")] + [Path(value.split(":")[0]) for value in EXPORTED_STATE if value]
FINGERPRINT_ENTRIES = 5000  # a real data set can be large: the first entries (folders first) are enough


def fingerprint(folder: Path) -> dict:
    """{path: (mtime_ns, size)} of FOLDER and what lies in it, three levels deep (a new frame changes its class
    folder's mtime; an appended index.jsonl its own)."""
    found: dict = {}
    for directory, subdirectories, files in os.walk(folder):
        depth = len(Path(directory).relative_to(folder).parts)
        if depth >= 3:
            subdirectories[:] = []
        for path in [Path(directory)] + [Path(directory) / name for name in files]:
            try:
                stats = path.lstat()
            except OSError:
                continue
            found[str(path)] = (stats.st_mtime_ns, stats.st_size)
            if len(found) >= FINGERPRINT_ENTRIES:
                return found
    return found


def changes(before: dict, after: dict) -> list:
    return sorted(f"{path}: {'new' if path not in before else 'gone' if path not in after else 'changed'}"
                  for path in set(before) | set(after) if before.get(path) != after.get(path))


@pytest.fixture(autouse=True)
def no_real_state_folder(monkeypatch, tmp_path_factory):
    """In this process the installed device's /var/lib/edgecam and its data set are a folder that does not
    exist; after the test, every real state folder a run could reach must be as it was."""
    from device import state
    from device.teach.dataset import space

    nowhere = tmp_path_factory.getbasetemp() / "no-var-lib-edgecam"
    monkeypatch.setattr(state, "SYSTEM_STATE_DIR", nowhere)
    monkeypatch.setattr(space, "DEFAULT_ROOT", nowhere / "dataset")
    before = {folder: fingerprint(folder) for folder in WATCHED_STATE}
    yield
    for folder, prints in before.items():
        changed = changes(prints, fingerprint(folder))
        assert not changed, (f"this test wrote into the real state folder {folder} (tests must use a folder "
                             f"under tmp_path): {changed[:5]}")

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
