"""Never lose a working model (issue 13, host half): every case here failed on the code before it.

Real parts throughout: TensorFlow training on conftest's tiny generated set, the TFLite converter, the device's
interpreter loader, real folders, symlinks and file permissions. Two things are provoked rather than waiting for
them to happen: a failure while the bundle is exported (export_bundle replaced by one that raises ENOSPC, as a
full disk would) and a parity failure (a threshold no model can meet, min agreement 101% on every image).
"""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import os
import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest
from conftest import copy_bundle

from convert import cli as convert_cli
from convert.api import convert_bundle
from convert.parity import Thresholds
from deploy import bundle as deploy_bundle
from device import layout
from device.manifest import Manifest, ManifestError, load_manifest, save_manifest
from train import api as train_api
from train import cli as train_cli

SMALL_RUN = ["--model", "small", "--image-size", "32", "--epochs", "1", "--batch-size", "32"]


def quiet(_message: str) -> None:
    pass


def tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def siblings(path: Path) -> list:
    return sorted(p.name for p in path.parent.iterdir() if not p.name.endswith(".lock"))


# ---- train: checks first, staged export, resume --------------------------------------------------
def test_overwrite_with_a_bad_data_folder_leaves_the_old_bundle(tiny_bundle, tmp_path, capsys):
    out = copy_bundle(tiny_bundle, tmp_path / "rps")
    before = tree_digest(out)
    code = train_cli.main(["--data", str(tmp_path / "typo"), "--out", str(out), "--overwrite", *SMALL_RUN])
    assert code == 2 and "typo does not exist" in capsys.readouterr().err
    assert tree_digest(out) == before and siblings(out) == ["rps"]


def test_validation_split_0_with_a_test_folder_is_refused_before_training(tiny_data_dir, tmp_path, capsys):
    """The checkpoint would otherwise be chosen on the test/ images that are then reported as held-out."""
    code = train_cli.main(["--data", str(tiny_data_dir), "--out", str(tmp_path / "out"),
                           "--validation-split", "0", *SMALL_RUN])
    error = capsys.readouterr().err
    assert code == 2 and "validating on the test/ images would pick the checkpoint" in error
    assert "--validation-split 0.1" in error and not list(tmp_path.iterdir())


def test_unwritable_output_folder_is_refused_before_training(tiny_data_dir, tmp_path, capsys):
    parent = tmp_path / "locked"
    parent.mkdir()
    with read_only(parent):
        code = train_cli.main(["--data", str(tiny_data_dir), "--out", str(parent / "rps"), *SMALL_RUN])
    assert code == 2 and f"Cannot write to {parent}" in capsys.readouterr().err


def test_symlinked_train_folder_trains_and_a_failed_export_keeps_the_old_bundle_until_resume(
        tiny_bundle, tiny_data_dir, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(tiny_data_dir / "train", data / "train")  # the data set is kept elsewhere
    os.symlink(tiny_data_dir / "test", data / "test")
    out = copy_bundle(tiny_bundle, tmp_path / "artifacts" / "rps")
    (out / "my-notes.txt").write_text("mine")
    before = tree_digest(out)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(train_api, "export_bundle", full_disk)
    code = train_cli.main(["--data", str(data), "--out", str(out), "--overwrite", *SMALL_RUN])
    error = capsys.readouterr().err
    staging = train_api.run_state(out).parent.parent  # artifacts/.rps.training
    assert staging == layout.staging_path(out, layout.TRAINING_RUN)
    assert code == 2 and "No space left on device" in error and str(staging) in error and "--resume" in error
    assert tree_digest(out) == before  # the old bundle, byte for byte
    assert json.loads((staging / "checkpoints" / "state.json").read_text())["epochs_done"] == 1

    monkeypatch.undo()
    assert train_cli.main(["--data", str(data), "--out", str(out), "--resume", *SMALL_RUN]) == 0
    manifest = load_manifest(out)
    assert manifest.input.height == 32 and manifest.training["epochs_run"] == 1
    assert manifest.dataset.root == str(data) and manifest.dataset.train_folder == "train"  # not resolved
    heldout = (out / layout.HELDOUT).read_text().splitlines()
    assert len(heldout) == 36 and all(line.split("\t")[1].startswith("test/") for line in heldout)
    assert (out / "my-notes.txt").read_text() == "mine"  # what edgecam did not write stays
    assert siblings(out) == ["rps"]  # staging swapped in, nothing left beside


# ---- convert: staged, parity status, exit codes, calibration fallback ---------------------------------
@pytest.fixture
def converted(tiny_bundle, tmp_path) -> Path:
    """A copy of the tiny bundle with a float32 model whose parity passed."""
    bundle = copy_bundle(tiny_bundle, tmp_path / "rps")
    report = convert_bundle(bundle, formats="float32", progress=False, log=quiet)
    assert report.passed and load_manifest(bundle).parity == "passed"
    return bundle


def test_failed_parity_leaves_the_previous_models_manifest_and_report_and_keeps_the_try(converted, capsys):
    before = tree_digest(converted)
    impossible = Thresholds(min_agreement={"float32": 1.01}, confident_margin=0.0)  # every image counts
    report = convert_bundle(converted, formats="float32", thresholds=impossible, progress=False, log=quiet)
    assert not report.passed
    assert tree_digest(converted) == before  # tflite/, manifest.json, parity.md: byte-identical
    failed = Path(report.failed_try)
    assert failed.parent == converted.parent and failed.name.startswith("rps.failed-")
    assert load_manifest(failed).parity == "failed" and "Broken thresholds" in (failed / "parity.md").read_text()
    assert siblings(converted) == sorted(["rps", failed.name])
    # deploy.bundle refuses the failed try unless --force
    with pytest.raises(deploy_bundle.BundleError, match=r"failed its accuracy parity check.*--force"):
        deploy_bundle.collect(failed, ["float32"])
    assert deploy_bundle.collect(failed, ["float32"], force=True)[1]["models"] == ["float32"]


def test_skip_parity_marks_the_report_and_deploy_refuses_it_unless_forced(converted, tmp_path, capsys):
    assert "All thresholds hold" in (converted / "parity.md").read_text()
    convert_bundle(converted, formats="float32", skip_parity=True, progress=False, log=quiet)
    text = (converted / "parity.md").read_text()
    assert "NOT MEASURED" in text and "All thresholds hold" not in text
    assert not (converted / "parity.json").exists() and load_manifest(converted).parity == "skipped"
    archive = tmp_path / "dist" / "device.tar.gz"
    args = ["--bundle", str(converted), "--out", str(archive), "--models", "float32"]
    assert deploy_bundle.main(args) == 2
    assert "--skip-parity" in capsys.readouterr().err and not archive.exists()
    assert deploy_bundle.main([*args, "--force"]) == 0 and archive.is_file()


def test_read_only_bundle_folder_exits_2_and_changes_nothing(converted, capsys):
    before = tree_digest(converted)
    with read_only(converted):
        code = convert_cli.main([str(converted), "--formats", "float32", "--quiet"])
    assert code == 2 and f"Cannot write to {converted}" in capsys.readouterr().err
    assert tree_digest(converted) == before


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims WIDTH x HEIGHT pixels (signature, IHDR, IEND): Pillow refuses 20000x20000 as a
    decompression bomb when it opens it, with an exception that is not an OSError."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.mark.parametrize("content", [b"not a png", png_header_only(20000, 20000)], ids=["garbage", "bomb"])
def test_undecodable_held_out_image_exits_2_not_1(tiny_bundle, tmp_path, capsys, content):
    test_data = tmp_path / "test"
    for label in ("paper", "rock", "scissors"):
        (test_data / label).mkdir(parents=True)
        (test_data / label / "broken.png").write_bytes(content)
    code = convert_cli.main([str(tiny_bundle), "--formats", "float32", "--test-data", str(test_data), "--quiet"])
    assert code == 2 and "cannot be decoded" in capsys.readouterr().err


def test_without_a_calibration_folder_int8_calibrates_on_the_training_images(tiny_bundle, tiny_data_dir,
                                                                             tiny_calibration_dir, tmp_path,
                                                                             monkeypatch):
    """Calibration follows the data (issue 25 item 5): a bundle trained on folder X calibrates on X, even where
    the current folder holds the built-in calibration_data/ (which convert used to pick up: own objects were
    calibrated on drawn hands)."""
    shutil.copytree(tiny_calibration_dir, tmp_path / "calibration_data" / "rps")  # the built-in images' trap
    monkeypatch.chdir(tmp_path)
    bundle = copy_bundle(tiny_bundle, tmp_path / "rps")
    messages = []
    lenient = Thresholds(min_agreement={"int8": 0.0}, max_accuracy_drop={"int8": 100.0},  # near-chance model,
                         max_drop_bound={"int8": 100.0})  # 36 held-out images cannot bound a drop to 3 points
    report = convert_bundle(bundle, formats="int8", thresholds=lenient, progress=False, log=messages.append)
    assert report.passed
    said = f"the bundle's training images (120 of 120 in {tiny_data_dir / 'train'}, held-out images excluded)"
    assert any(said in message for message in messages)
    assert said in report.calibration and said in json.loads((bundle / "parity.json").read_text())["calibration"]
    assert f"int8 calibrated on {said}" in (bundle / "parity.md").read_text()
    assert said in load_manifest(bundle).calibration and "calibration_data" not in load_manifest(bundle).calibration
    assert load_manifest(bundle).dataset.root == str(tiny_data_dir)  # where the training data came from
    assert load_manifest(bundle).models["int8"].input_dtype == "int8"



def test_a_bundle_another_command_is_writing_exits_3_worth_a_retry(tiny_bundle, tiny_data_dir, tmp_path, capsys):
    bundle = copy_bundle(tiny_bundle, tmp_path / "rps")
    before = tree_digest(bundle)
    holder = layout.Stage(bundle)
    holder.open()  # as a running convert would
    try:
        assert convert_cli.main([str(bundle), "--formats", "float32", "--quiet"]) == 3
        assert "being written by another edgecam command" in capsys.readouterr().err
        assert train_cli.main(["--data", str(tiny_data_dir), "--out", str(bundle), "--overwrite", *SMALL_RUN]) == 3
        assert "being written by another edgecam command" in capsys.readouterr().err
    finally:
        holder.fail()
    assert tree_digest(bundle) == before

# ---- the strict manifest (unit level) --------------------------------------------------------------
def _manifest_data() -> dict:
    return Manifest(name="rps", labels=["paper", "rock"], input=layout_input(), models={}).to_dict()


def layout_input():
    from device.manifest import InputSpec

    return InputSpec(height=48, width=48)


MODEL_ENTRY = {"format": "int8", "file": "tflite/model_int8.tflite", "sha256": "ab" * 32, "size_bytes": 10,
               "input_dtype": "int8", "output_dtype": "int8"}


@pytest.mark.parametrize("change, field_named", [
    (lambda d: d.update(models=[1]), "'models' must be a JSON object"),
    (lambda d: d.update(dataset="x"), "'dataset' must be a JSON object"),
    (lambda d: d["input"].update(value_range=5), "'input.value_range' must be a list"),
    (lambda d: d["input"].update(value_range=["low", 255]), "input.value_range must be [low, high]"),
    (lambda d: d["input"].update(height="48"), "'input.height' must be an integer"),
    (lambda d: d.update(test_accuracy="high"), "'test_accuracy' must be a number"),
    (lambda d: d.update(labels="paper,rock"), "'labels' must be a list"),
    (lambda d: d.update(input=None), "'input' must be a JSON object"),
    (lambda d: d.update(models={"int8": 7}), "'models.int8' must be a JSON object"),
    (lambda d: d.update(models={"int8": {**MODEL_ENTRY, "sha256": ""}}), "models.int8.sha256 must be 64"),
    (lambda d: d.update(models={"int8": {**MODEL_ENTRY, "sha256": "abc"}}), "models.int8.sha256 must be 64"),
    (lambda d: d.update(models={"int8": {**MODEL_ENTRY, "size_bytes": "10"}}), "'models.int8.size_bytes'"),
    (lambda d: d.update(models={"int8": {k: v for k, v in MODEL_ENTRY.items() if k != "file"}}),
     "required field 'models.int8.file' is missing"),
    (lambda d: d.update(parity="ok"), "parity must be one of"),
])
def test_every_malformed_field_is_a_manifest_error_naming_it(change, field_named):
    data = copy.deepcopy(_manifest_data())
    change(data)
    with pytest.raises(ManifestError) as error:
        Manifest.from_dict(data)
    assert field_named in str(error.value)


def test_a_well_formed_manifest_round_trips():
    data = _manifest_data()
    data["models"] = {"int8": dict(MODEL_ENTRY)}
    manifest = Manifest.from_dict(copy.deepcopy(data))
    assert manifest.models["int8"].sha256 == "ab" * 32 and manifest.input.value_range == (0.0, 255.0)
    assert Manifest.from_dict(json.loads(manifest.to_json())) == manifest


@dataclass
class Capture:
    images: int = 0
    folder: str = ""


@dataclass
class ExtendedManifest(Manifest):
    """What another engineer's optional fields look like: checked with no change to the checker."""

    capture: Optional[Capture] = None
    teach: dict = field(default_factory=dict)


def test_fields_added_later_are_checked_from_their_annotations():
    data = _manifest_data()
    assert ExtendedManifest.from_dict({**data, "capture": {"images": 3}}).capture == Capture(images=3)
    assert ExtendedManifest.from_dict({**data, "capture": None}).capture is None
    with pytest.raises(ManifestError, match=r"'capture.images' must be an integer"):
        ExtendedManifest.from_dict({**data, "capture": {"images": "three"}})
    with pytest.raises(ManifestError, match=r"'teach' must be a JSON object"):
        ExtendedManifest.from_dict({**data, "teach": []})


def test_labels_txt_must_agree_with_the_manifest(tmp_path):
    bundle = tmp_path / "rps"
    save_manifest(Manifest.from_dict(_manifest_data()), bundle)
    (bundle / layout.LABELS).write_text("paper\nrock\n")
    assert load_manifest(bundle).labels == ["paper", "rock"]
    (bundle / layout.LABELS).write_text("rock\npaper\n")
    with pytest.raises(ManifestError, match=r"lists \['rock', 'paper'\] but .* lists labels \['paper', 'rock'\]"):
        load_manifest(bundle)


# ---- helpers ------------------------------------------------------------------------------------------
class read_only:
    """Make FOLDER refuse new files: mode 0555 for a normal user; for root (which ignores modes) the immutable
    attribute (chattr +i). Skips the test where neither is possible."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.root = os.geteuid() == 0

    def __enter__(self):
        if self.root:
            chattr = shutil.which("chattr")
            if not chattr or subprocess.run([chattr, "+i", str(self.folder)], capture_output=True).returncode:
                pytest.skip("running as root on a file system without chattr +i: cannot make a folder read-only")
        else:
            self.folder.chmod(0o555)
        return self.folder

    def __exit__(self, *exc):
        if self.root:
            subprocess.run(["chattr", "-i", str(self.folder)], check=True)
        else:
            self.folder.chmod(0o755)
        return False


def test_a_conversion_never_clears_an_interrupted_training_run(tmp_path):
    bundle = tmp_path / "rps"
    bundle.mkdir()
    run = layout.staging_path(bundle, layout.TRAINING_RUN) / "checkpoints"
    run.mkdir(parents=True)
    (run / "state.json").write_text('{"epochs_done": 2}')
    with layout.Stage(bundle) as staging:  # what convert does
        (staging / layout.PARITY_MD).write_text("new")
    assert (run / "state.json").read_text() == '{"epochs_done": 2}'


def test_a_symlinked_bundle_is_written_where_it_points_time_after_time(tmp_path):
    """artifacts/rps -> /elsewhere/rps-v3 (a bundle kept on a bigger disk): each staged write goes beside the
    link's target and the link keeps pointing at it. The first write used to swap the link itself out (the
    bundle became a folder beside a stale target) and the second failed: 'Cannot call rmtree on a symbolic
    link'."""
    target = tmp_path / "disk" / "rps-v3"
    (target / layout.TFLITE_DIR).mkdir(parents=True)
    (target / layout.MANIFEST).write_text("version 1")
    link = tmp_path / "artifacts" / "rps"
    link.parent.mkdir()
    link.symlink_to(target)
    for version in (2, 3):
        with layout.Stage(link) as staging:
            assert staging == layout.staging_path(link) and staging.parent == target.parent
            (staging / layout.MANIFEST).unlink()
            (staging / layout.MANIFEST).write_text(f"version {version}")
        assert link.is_symlink() and link.resolve() == target.resolve()
        assert (target / layout.MANIFEST).read_text() == f"version {version}"
        assert siblings(link) == ["rps"] and siblings(target) == ["rps-v3"]
    # the link and its target are one bundle: a writer through either name excludes the other
    with layout.Stage(link):
        with pytest.raises(layout.StageError, match="being written by another edgecam command"):
            layout.Stage(target).open()
