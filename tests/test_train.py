"""train/: loader edge cases, a real tiny training run and its bundle, resume, mirrored strategy."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TINY_MODEL_SIZE
from PIL import Image

from device.manifest import Manifest, ManifestError, load_manifest
from train.dataset import DataError, decode_rgb, scan_image_folder

PYTHON = sys.executable


def run_train(*args, env=None, timeout=300):
    return subprocess.run([PYTHON, "-m", "train", *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})


def write_image(path: Path, mode="RGB", size=(40, 30), value=128, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash((str(path), value))) % 2**32)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    array = rng.integers(0, 255, size=(size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(array.squeeze() if channels == 1 else array, mode).save(path, format=fmt)


def tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---- loader ------------------------------------------------------------------------------------
def test_missing_folder_says_how_to_get_data(tmp_path):
    with pytest.raises(DataError, match="does not exist.*make data"):
        scan_image_folder(tmp_path / "nope")


def test_fewer_than_two_classes_is_refused(tmp_path):
    write_image(tmp_path / "only" / "a.png")
    with pytest.raises(DataError, match="at least two"):
        scan_image_folder(tmp_path)


def test_empty_class_is_named(tmp_path):
    write_image(tmp_path / "rock" / "a.png")
    (tmp_path / "paper").mkdir()
    with pytest.raises(DataError, match=r"paper holds no readable images"):
        scan_image_folder(tmp_path)


def test_mixed_formats_modes_and_sizes_are_read_and_bad_files_skipped_untouched(tmp_path, caplog):
    write_image(tmp_path / "train" / "rock" / "rgb.png")
    write_image(tmp_path / "train" / "rock" / "rgba.png", mode="RGBA", size=(300, 300))
    write_image(tmp_path / "train" / "rock" / "gray.png", mode="L")
    write_image(tmp_path / "train" / "paper" / "photo.jpg", fmt="JPEG", size=(64, 48))
    write_image(tmp_path / "train" / "paper" / "second.jpeg", fmt="JPEG")
    (tmp_path / "train" / "paper" / "truncated.png").write_bytes(
        (tmp_path / "train" / "rock" / "rgb.png").read_bytes()[:60])
    (tmp_path / "train" / "paper" / "notes.txt").write_text("not an image")
    write_image(tmp_path / "test" / "rock" / "t.png")
    write_image(tmp_path / "test" / "paper" / "t.png", mode="L")
    before = tree_digest(tmp_path)

    folder = scan_image_folder(tmp_path, validation_split=0.1)

    assert folder.class_names == ["paper", "rock"]
    assert len(folder.train) + len(folder.validation) == 5 and len(folder.test) == 2
    assert not set(folder.validation.paths) & set(folder.test.paths)
    assert folder.heldout_source == "test-folder"
    assert sorted(Path(p).name for p, _ in folder.skipped) == ["notes.txt", "truncated.png"]
    assert "truncated.png" in caplog.text and "skipped 2 file(s)" in caplog.text
    assert tree_digest(tmp_path) == before  # nothing the user owns is modified or deleted
    for path in folder.train.paths + folder.validation.paths:
        image = decode_rgb(path)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def test_validation_split_is_stratified_and_seeded(tmp_path):
    for cls in ("a", "b"):
        for i in range(10):
            write_image(tmp_path / cls / f"{i}.png", value=i)
    first = scan_image_folder(tmp_path, validation_split=0.2, seed=3)
    again = scan_image_folder(tmp_path, validation_split=0.2, seed=3)
    other = scan_image_folder(tmp_path, validation_split=0.2, seed=4)
    assert first.validation.paths == again.validation.paths
    assert first.validation.paths != other.validation.paths
    assert sorted(first.validation.labels) == [0, 0, 1, 1]
    assert first.heldout_source == "validation-split" and first.test.paths == first.validation.paths
    assert not set(first.train.paths) & set(first.validation.paths)


# ---- a real tiny training run ---------------------------------------------------------------
def test_bundle_has_every_artifact_and_a_valid_manifest(tiny_bundle, tiny_data_dir):
    for name in ("saved_model/saved_model.pb", "model.keras", "labels.txt", "manifest.json", "heldout.txt",
                 "history.csv", "training.png", "checkpoints/best.keras"):
        assert (tiny_bundle / name).exists(), name
    assert list((tiny_bundle / "logs").rglob("events.out.tfevents.*")), "TensorBoard logs missing"
    manifest = load_manifest(tiny_bundle)
    assert manifest.labels == ["paper", "rock", "scissors"]
    assert (tiny_bundle / "labels.txt").read_text().split() == manifest.labels
    assert (manifest.input.height, manifest.input.width, manifest.input.colour_order) == (TINY_MODEL_SIZE,
                                                                                          TINY_MODEL_SIZE, "RGB")
    assert manifest.input.value_range == (0.0, 255.0)
    assert manifest.dataset.num_test == len((tiny_bundle / "heldout.txt").read_text().splitlines()) == 36
    assert len(manifest.dataset.fingerprint) == 64
    assert manifest.versions["tensorflow"].startswith("2.")
    assert 0.0 <= manifest.test_accuracy <= 1.0
    with open(tiny_bundle / "history.csv") as stream:
        assert [row["epoch"] for row in csv.DictReader(stream)] == ["0", "1", "2"]
    label, relative = (tiny_bundle / "heldout.txt").read_text().splitlines()[0].split("\t")
    assert (Path(manifest.dataset.root) / relative).is_file() and label in manifest.labels


def test_savedmodel_is_deterministic_and_equals_keras(tiny_bundle, tiny_data_dir):
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(16, TINY_MODEL_SIZE, TINY_MODEL_SIZE, 3)).astype(np.float32)
    keras_probabilities = keras.models.load_model(tiny_bundle / "model.keras").predict(images, verbose=0)
    serving = tf.saved_model.load(str(tiny_bundle / "saved_model")).signatures["serving_default"]
    first = list(serving(tf.constant(images)).values())[0].numpy()
    second = list(serving(tf.constant(images)).values())[0].numpy()
    np.testing.assert_array_equal(first, second)  # no augmentation layer survives in the export
    np.testing.assert_allclose(first, keras_probabilities, atol=1e-5)
    np.testing.assert_allclose(first.sum(axis=1), 1.0, atol=1e-5)  # softmax probabilities


def test_manifest_round_trips_and_rejects_malformed(tiny_bundle, tmp_path):
    manifest = load_manifest(tiny_bundle)
    assert Manifest.from_dict(json.loads(manifest.to_json())) == manifest
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(bad)
    data = manifest.to_dict()
    data["labels"] = ["only-one"]
    with pytest.raises(ManifestError, match="at least two"):
        Manifest.from_dict(data)
    data = manifest.to_dict()
    data["schema_version"] = 99
    with pytest.raises(ManifestError, match="schema_version"):
        Manifest.from_dict(data)


# ---- command line: refusals, resume, mirrored --------------------------------------------------
def test_existing_bundle_is_refused_without_overwrite_and_foreign_files_survive(tiny_bundle, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text((tiny_bundle / "manifest.json").read_text())
    (out / "my-notes.txt").write_text("mine")
    result = run_train("--data", tmp_path / "nothing", "--out", out)
    assert result.returncode == 2 and "already holds a bundle" in result.stderr and "--overwrite" in result.stderr

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("precious")
    result = run_train("--data", tmp_path, "--out", foreign)
    assert result.returncode == 2 and "not an edgecam bundle" in result.stderr
    assert (foreign / "thesis.docx").read_text() == "precious"


def test_missing_data_folder_exits_2_with_a_hint(tmp_path):
    result = run_train("--data", tmp_path / "missing", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "make data" in result.stderr


def test_help_shows_defaults():
    result = run_train("--help")
    assert result.returncode == 0
    for flag in ("--epochs", "--batch-size", "--image-size", "--learning-rate", "--seed", "--model",
                 "--validation-split", "--strategy", "--resume", "--overwrite"):
        assert flag in result.stdout
    assert "(default: 15)" in result.stdout and "(default: 150)" in result.stdout


# ---- resume: the epoch's record is one atomic write -------------------------------------------------
# No hook in train/: the tests reach into the run only from outside, by wrapping the file operations the
# process makes (a sitecustomize.py on the child's PYTHONPATH, or os.* patched around an in-process run).
KILL_BEFORE_THE_THIRD_COMMIT = """
import json, os, signal
_replace, _armed = os.replace, False
def replace(source, target, *args, **kwargs):
    global _armed
    state = str(target).endswith(os.path.join("checkpoints", "state.json"))
    if _armed and state:
        os.kill(os.getpid(), signal.SIGKILL)  # epoch 3 is written up to its commit: as late as a kill can come
    _replace(source, target, *args, **kwargs)
    if state:
        with open(target) as stream:
            _armed = _armed or json.load(stream).get("epochs_done", 0) >= 2
os.replace = replace
"""


def history_epochs(bundle: Path) -> list:
    if not (bundle / "history.csv").is_file():
        return []
    with open(bundle / "history.csv") as stream:
        return [int(row["epoch"]) for row in csv.DictReader(stream)]


def test_resume_after_kill_loses_no_finished_epoch(tiny_data_dir, tmp_path):
    """SIGKILL of the real process at the last moment of epoch 3's record, just before its state.json lands
    (a sitecustomize.py in the child's PYTHONPATH wraps os.replace: test-side only). The history row of
    epoch 3 used to be on disk by then, so the resumed run wrote it twice and counted 5 epochs."""
    out = tmp_path / "run"
    args = ["--data", tiny_data_dir, "--out", out, "--model", "small", "--image-size", "32", "--epochs", "4",
            "--batch-size", "32", "--patience", "10"]
    killer = tmp_path / "killer"
    killer.mkdir()
    (killer / "sitecustomize.py").write_text(KILL_BEFORE_THE_THIRD_COMMIT)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": f"{killer}{os.pathsep}{REPO}"}
    killed = subprocess.run([PYTHON, "-m", "train", *map(str, args)], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = out.with_name(".run.training") / "checkpoints" / "state.json"  # the run in progress, beside --out
    assert json.loads(state.read_text())["epochs_done"] == 2
    assert not out.exists()  # nothing half-made where the bundle goes

    refused = run_train(*args)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    resumed = run_train(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 2" in resumed.stdout
    assert history_epochs(out) == [0, 1, 2, 3]  # finished epochs kept, none run twice
    assert load_manifest(out).training["epochs_run"] == 4


class Snapshots:
    """While the block runs, wrap os.replace, os.link and os.unlink: once epoch 1's record is committed
    (state.json says 1 epoch done), copy the run folder before every operation on it, which is exactly what a
    kill at that moment would leave on disk. -> self.taken: [(operation, copy)]."""

    def __init__(self, run: Path, folder: Path):
        self.run, self.folder, self.taken, self.armed, self.copying = run, folder, [], False, False

    def wrap(self, name, original):
        def operation(*args, **kwargs):
            paths = [Path(os.fsdecode(arg)) for arg in args[:2] if isinstance(arg, (str, bytes, os.PathLike))]
            if self.armed and not self.copying and any(self.run in path.parents for path in paths):
                self.copying = True
                copy = self.folder / f"{len(self.taken):02d}" / self.run.name
                shutil.copytree(self.run, copy)
                self.taken.append((f"{name} {paths[-1].name}", copy))
                self.copying = False
            result = original(*args, **kwargs)
            if name == "replace" and paths[-1] == self.run / "checkpoints" / "state.json":
                self.armed = self.armed or json.loads(paths[-1].read_text())["epochs_done"] >= 1
            return result
        return operation

    def __enter__(self):
        self.originals = {name: getattr(os, name) for name in ("replace", "link", "unlink")}
        for name, original in self.originals.items():
            setattr(os, name, self.wrap(name, original))
        return self

    def __exit__(self, *exc):
        for name, original in self.originals.items():
            setattr(os, name, original)
        return False


def test_a_kill_anywhere_in_an_epoch_record_leaves_a_whole_record_that_resume_continues(tiny_data_dir, tmp_path):
    """The run folder as a kill before each file operation after epoch 1's commit leaves it (copied at that moment,
    test-side: train/ has no hook): state.json always names a whole record - as many history rows as epochs
    done, the model files it names present - and no history row or checkpoint runs ahead of it. Then --resume
    from the moment just after the commit (history.csv and last.keras still epoch 1's) ends with epochs [0, 1],
    no epoch rerun, epochs_run 2."""
    import keras

    from device import layout
    from train.api import train_bundle

    options = dict(model="small", image_size=32, epochs=2, batch_size=32, patience=10, seed=0, verbose=0)
    out = tmp_path / "run"
    with Snapshots(layout.staging_path(out, layout.TRAINING_RUN), tmp_path / "kills") as snapshots:
        train_bundle(tiny_data_dir, out, **options)
    assert history_epochs(out) == [0, 1] and len(snapshots.taken) >= 3
    committed = None
    for point, (operation, run) in enumerate(snapshots.taken):
        state = json.loads((run / "checkpoints" / "state.json").read_text())
        done = state["epochs_done"]
        assert done in (1, 2) and [row["epoch"] for row in state["history"]] == list(range(done)), operation
        assert state["last"] == f"epoch-{done:04d}.keras", operation
        keras.models.load_model(run / "checkpoints" / state["last"])  # whole, not half-written
        assert (run / "checkpoints" / state["best"]).is_file(), operation
        assert len(history_epochs(run)) <= done, operation  # a history row never runs ahead of state.json
        if done == 2 and committed is None:
            committed = point
    assert committed is not None and history_epochs(snapshots.taken[committed][1]) == [0]  # derived: not yet

    resumed = tmp_path / "resumed" / "run"
    shutil.copytree(snapshots.taken[committed][1], layout.staging_path(resumed, layout.TRAINING_RUN))
    train_bundle(tiny_data_dir, resumed, resume=True, **options)
    assert history_epochs(resumed) == [0, 1]
    assert load_manifest(resumed).training["epochs_run"] == 2


def test_mirrored_strategy_on_two_logical_cpus(tiny_data_dir, tmp_path):
    out = tmp_path / "mirrored"
    result = run_train("--data", tiny_data_dir, "--out", out, "--model", "small", "--image-size", "32",
                       "--epochs", "1", "--batch-size", "16", "--strategy", "mirrored", "--cpu-devices", "2")
    assert result.returncode == 0, result.stderr
    assert "strategy: mirrored, 2 replica(s)" in result.stdout
    manifest = load_manifest(out)
    assert manifest.training["strategy"] == "mirrored"
    assert (out / "saved_model" / "saved_model.pb").is_file()


def test_multi_worker_without_tf_config_explains(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = subprocess.run([PYTHON, "-m", "train", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                             "--strategy", "multi-worker"], cwd=REPO, capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "TF_CONFIG" in result.stderr


def test_same_seed_trains_the_same_weights_and_another_seed_does_not(tiny_data_dir, tmp_path):
    """Seeded training is reproducible (op determinism on), augmentation included."""
    import keras

    def weights(seed, name):
        out = tmp_path / name
        result = run_train("--data", tiny_data_dir, "--out", out, "--model", "small", "--image-size", "32",
                           "--epochs", "2", "--batch-size", "16", "--seed", seed)
        assert result.returncode == 0, result.stderr
        return keras.models.load_model(out / "model.keras").get_weights()

    first, again, other = weights(3, "a"), weights(3, "b"), weights(4, "c")
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    assert not all(np.array_equal(x, y) for x, y in zip(first, other))


def test_learning_rate_warms_up_over_one_epoch_then_decays_to_zero():
    from train.api import TrainOptions, learning_rate_schedule

    options = TrainOptions(epochs=10, batch_size=32, learning_rate=1e-3)
    schedule = learning_rate_schedule(options, train_images=320)  # 10 steps per epoch, 100 in all
    rate = [float(schedule(step)) for step in (0, 5, 10, 55, 100)]
    assert rate[0] == pytest.approx(1e-4)
    assert rate[0] < rate[1] < rate[2] == pytest.approx(1e-3)
    assert rate[2] > rate[3] > rate[4] and rate[4] == pytest.approx(0.0, abs=1e-9)
