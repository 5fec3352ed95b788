"""Teach accepts a head that is no worse in cross-validation, refuses a worse one (exit 1) unless forced,
allows new classes, and --undo goes back one revision at a time; capture and evaluate from the command line.
Real converted bundle, real TFLite interpreter, real files."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import device_bundle
import numpy as np
import pytest
import teach_bundle
from PIL import Image

from device.teach.cli import teach as teach_cli

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def bundle_copy(tmp_path_factory, tmp_path):
    from bench.teach import light_copy

    return light_copy(teach_bundle.shared_teach_bundle(tmp_path_factory), tmp_path / "bundle")


@pytest.fixture()
def lessons(tmp_path_factory, tmp_path):
    """The colour classes' training images as a data set (DATASET/<class>/*.png)."""
    return Path(shutil.copytree(teach_bundle.images_root(tmp_path_factory) / "train", tmp_path / "lessons"))


def misleading(tmp_path_factory, root: Path) -> Path:
    """One frame a class, two of them filed under the wrong class (paper shows rock, rock shows paper): the
    current head reads the scissors frame right (1 of 3); a head fitted on these cannot be checked on a class's
    only frame (cross-validation holds it out, so none of the 3 is right): honestly worse, so refused."""
    source = teach_bundle.images_root(tmp_path_factory) / "train"
    shown = {"paper": "rock", "rock": "paper", "scissors": "scissors"}
    for label in device_bundle.LABELS:
        (root / label).mkdir(parents=True)
        shutil.copy(source / shown[label] / f"{shown[label]}_000.png", root / label / "000.png")
    return root


def current(bundle, state_dir=None) -> int:
    from device.heads.store import open_store
    from device.manifest import load_manifest

    return open_store(bundle, load_manifest(bundle), "int8", state_dir).current_revision()


def test_accept_refuse_force_and_undo(bundle_copy, lessons, tmp_path_factory, tmp_path, capsys):
    arguments = ["--bundle", str(bundle_copy), "--threads", "1"]
    assert teach_cli(arguments + ["--data", str(lessons)]) == 0
    out = capsys.readouterr().out
    assert "ACCEPTED: now head revision 1 (paper, rock, scissors)" in out
    assert "5-fold cross-validation grouped by capture burst, 90 frames" in out
    assert current(bundle_copy) == 1

    worse = misleading(tmp_path_factory, tmp_path / "misleading")
    assert teach_cli(arguments + ["--data", str(worse)]) == 1
    out = capsys.readouterr().out
    assert "REFUSED: still head revision 1" in out and "worse than the current head's" in out
    assert current(bundle_copy) == 1 and not (bundle_copy / "heads" / "r0002").exists()

    assert teach_cli(arguments + ["--data", str(worse), "--force", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["accepted"] and result["revision"] == 2 and result["reason"] == "forced"
    assert result["accuracy_new"] < result["accuracy_current"]
    assert json.loads((bundle_copy / "heads" / "r0002" / "meta.json").read_text())["parent"] == 1

    assert teach_cli(arguments + ["--undo"]) == 0 and current(bundle_copy) == 1
    assert teach_cli(arguments + ["--undo"]) == 0 and current(bundle_copy) == 0
    assert "revision 0 (the bundle's own)" in capsys.readouterr().out
    assert teach_cli(arguments + ["--undo"]) == 2
    assert "already uses its own head (revision 0): there is nothing to undo" in capsys.readouterr().err


def test_a_new_class_is_taught_and_served(bundle_copy, lessons, capsys):
    from device.teach.teaching import load_classifier

    rng = np.random.default_rng(5)
    (lessons / "nothing").mkdir()
    for index in range(30):  # empty grey scenes: no coloured disc
        noise = rng.integers(60, 140, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(noise).save(lessons / "nothing" / f"{index:03d}.png")
    assert teach_cli(["--bundle", str(bundle_copy), "--data", str(lessons), "--threads", "1"]) == 0
    classifier = load_classifier(bundle_copy, "int8", threads=1)
    assert classifier.labels == ["nothing", "paper", "rock", "scissors"]
    empty = rng.integers(60, 140, (40, 40, 3), dtype=np.uint8)
    assert classifier.labels[int(np.argmax(classifier.probabilities(empty)))] == "nothing"


def test_too_little_data_is_refused_with_what_to_record(bundle_copy, tmp_path, capsys):
    (tmp_path / "one" / "paper").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(tmp_path / "one" / "paper" / "0.png")
    assert teach_cli(["--bundle", str(bundle_copy), "--data", str(tmp_path / "one")]) == 2
    assert "teaching needs at least 2" in capsys.readouterr().err
    assert current(bundle_copy) == 0


def run_device(*arguments, timeout=60):
    return subprocess.run([sys.executable, "-m", "device", *map(str, arguments)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False, env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_capture_cli_records_frames_from_an_images_source(bundle_copy, tmp_path_factory, tmp_path):
    images = teach_bundle.images_root(tmp_path_factory) / "test" / "rock"
    result = run_device("capture", "--bundle", bundle_copy, "--source", f"images:{images}", "--label", "rock",
                        "--count", 3, "--interval", 0, "--dataset", tmp_path / "ds", "--min-free-mb", 0)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["count"] for line in lines] == [1, 2, 3] and lines[0]["reading"]["label"] in device_bundle.LABELS
    files = sorted((tmp_path / "ds" / "rock").glob("*.jpg"))
    assert len(files) == 3 and Image.open(files[0]).size == (40, 40)  # the source's frame, not the model's 32x32
    index = [json.loads(line) for line in (tmp_path / "ds" / "index.jsonl").read_text().splitlines()]
    assert len(index) == 3 and index[0]["source"] == f"images:{images}" and index[0]["model"] == "tiny:int8"
    bad = run_device("capture", "--bundle", bundle_copy, "--source", f"images:{images}", "--label", "no way",
                     "--dataset", tmp_path / "ds")
    assert bad.returncode == 2 and "use 1-40 letters, digits" in bad.stderr


def test_evaluate_reports_accuracy_per_class_confusion_and_a_contact_sheet(bundle_copy, tmp_path_factory,
                                                                           tmp_path):
    source = teach_bundle.images_root(tmp_path_factory) / "test"
    data = Path(shutil.copytree(source, tmp_path / "data"))
    for path in sorted((source / "rock").glob("*.png"))[:3]:  # three rock images filed as paper: mistakes
        shutil.copy(path, data / "paper" / f"wrong_{path.name}")
    result = run_device("evaluate", "--bundle", bundle_copy, "--data", data, "--out", tmp_path / "eval",
                        "--threads", 1)
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "eval" / "report.md").read_text()
    assert report in result.stdout
    assert "27 images from" in report and "| class | precision | recall | images |" in report
    assert "| paper | 100.0% | 72.7% | 11 |" in report
    assert "| truth \\ predicted | paper | rock | scissors |" in report and "| paper | 8 | 3 | 0 |" in report
    with Image.open(tmp_path / "eval" / "mistakes.png") as sheet:
        assert sheet.size[0] > 0 and "Mistakes: mistakes.png" in report
    missing = run_device("evaluate", "--bundle", bundle_copy, "--data", tmp_path / "nowhere")
    assert missing.returncode == 2 and "has no images in class folders" in missing.stderr
