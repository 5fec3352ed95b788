"""train.datagen: the built-in rock-paper-scissors set is deterministic, well formed and not trivial."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from train import datagen
from train.datagen import CLASS_NAMES, DatasetExistsError, generate_calibration, generate_dataset

SIZE = 48


def digests(folder: Path) -> dict:
    """relative path -> sha256 of every file under FOLDER."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def small_set(folder: Path, seed: int = 0, workers: int = 1) -> dict:
    return generate_dataset(folder, train_per_class=3, test_per_class=2, size=SIZE, seed=seed,
                            progress=False, workers=workers)


def test_same_seed_gives_byte_identical_files(tmp_path):
    small_set(tmp_path / "a", workers=1)
    small_set(tmp_path / "b", workers=2)  # a process pool renders in any order: same bytes
    generate_calibration(tmp_path / "cal_a", per_class=2, size=SIZE, progress=False)
    generate_calibration(tmp_path / "cal_b", per_class=2, size=SIZE, progress=False)
    first, second = digests(tmp_path / "a"), digests(tmp_path / "b")
    assert len(first) == 3 * (3 + 2) + 1  # images + dataset.json
    assert first == second
    assert digests(tmp_path / "cal_a") == digests(tmp_path / "cal_b")


def test_different_seed_gives_different_images(tmp_path):
    small_set(tmp_path / "a", seed=0)
    small_set(tmp_path / "b", seed=1)
    first, second = digests(tmp_path / "a"), digests(tmp_path / "b")
    images = [name for name in first if name.endswith(".png")]
    assert all(first[name] != second[name] for name in images)


def test_layout_counts_and_image_format(tmp_path):
    result = small_set(tmp_path)
    assert result == {"train": {c: 3 for c in CLASS_NAMES}, "test": {c: 2 for c in CLASS_NAMES}, "reused": False}
    for split, count in (("train", 3), ("test", 2)):
        assert sorted(p.name for p in (tmp_path / split).iterdir()) == sorted(CLASS_NAMES)
        for label in CLASS_NAMES:
            names = sorted(p.name for p in (tmp_path / split / label).iterdir())
            assert names == [f"{label}_{i:04d}.png" for i in range(count)]
            for name in names:
                with Image.open(tmp_path / split / label / name) as image:
                    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (SIZE, SIZE))
                    assert not image.info.get("dpi") and not image.text  # no metadata in the bytes
    manifest = json.loads((tmp_path / "dataset.json").read_text())
    assert manifest["complete"] is True
    assert manifest["parameters"]["seed"] == 0 and manifest["parameters"]["size"] == SIZE

    assert generate_calibration(tmp_path / "cal", per_class=4, size=SIZE, progress=False) == 12
    names = sorted(p.name for p in (tmp_path / "cal").glob("*.png"))
    assert names == sorted(f"{label}_{i:04d}.png" for label in CLASS_NAMES for i in range(4))


def test_train_test_and_calibration_images_are_all_distinct(tmp_path):
    small_set(tmp_path / "data", seed=0)
    generate_calibration(tmp_path / "cal", per_class=3, size=SIZE, seed=0, progress=False)  # even same seed
    hashes = [h for name, h in digests(tmp_path / "data").items() if name.endswith(".png")]
    hashes += [h for name, h in digests(tmp_path / "cal").items() if name.endswith(".png")]
    assert len(hashes) == 3 * (3 + 2 + 3)
    assert len(set(hashes)) == len(hashes)


def nearest_class_mean_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Two-fold cross-validated accuracy of the nearest-class-mean classifier on FEATURES."""
    order = np.random.default_rng(0).permutation(len(labels))
    halves = order[: len(order) // 2], order[len(order) // 2:]
    correct = 0
    for fit, check in (halves, halves[::-1]):
        means = np.stack([features[fit][labels[fit] == k].mean(axis=0) for k in range(len(CLASS_NAMES))])
        distances = ((features[check][:, None, :] - means[None]) ** 2).sum(axis=-1)
        correct += int((distances.argmin(axis=1) == labels[check]).sum())
    return correct / len(labels)


def test_classes_are_not_separable_by_colour_brightness_or_skin_area():
    colour, brightness, area, labels = [], [], [], []
    for k, label in enumerate(CLASS_NAMES):
        for index in range(30):
            image, mask = datagen.render_hand(label, datagen.image_rng(0, "train", label, index), SIZE,
                                              with_mask=True)
            pixels = np.asarray(image, dtype=np.float64)
            colour.append(pixels.mean(axis=(0, 1)))
            brightness.append([pixels.mean()])
            area.append([mask.mean()])
            labels.append(k)
    labels = np.array(labels)
    for name, features in (("mean RGB", colour), ("brightness", brightness), ("skin area", area)):
        accuracy = nearest_class_mean_accuracy(np.array(features), labels)
        assert accuracy < 0.6, f"{name} alone separates the classes ({accuracy:.0%} accuracy)"
    areas = np.array(area)[:, 0]
    class_means = [areas[labels == k].mean() for k in range(len(CLASS_NAMES))]
    assert max(class_means) < 1.3 * min(class_means)  # fist drawn bigger, open hand smaller


def test_second_run_with_same_parameters_reuses_the_files(tmp_path):
    small_set(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.png")}
    assert small_set(tmp_path)["reused"] is True
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.png")} == before

    (tmp_path / "train" / "rock" / "my_own_photo.png").write_bytes(b"user file")
    result = generate_dataset(tmp_path, train_per_class=2, test_per_class=2, size=SIZE, progress=False,
                              workers=1)
    assert result["reused"] is False
    assert not (tmp_path / "train" / "rock" / "rock_0002.png").exists()  # our stale file removed
    assert (tmp_path / "train" / "rock" / "my_own_photo.png").read_bytes() == b"user file"  # never theirs


def test_missing_file_triggers_regeneration(tmp_path):
    small_set(tmp_path)
    (tmp_path / "test" / "paper" / "paper_0001.png").unlink()
    assert small_set(tmp_path)["reused"] is False
    assert (tmp_path / "test" / "paper" / "paper_0001.png").is_file()


def test_refuses_a_non_empty_folder_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DatasetExistsError, match="not written by train.datagen.*--overwrite"):
        small_set(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    with pytest.raises(DatasetExistsError, match="--overwrite"):
        generate_calibration(tmp_path, per_class=1, size=SIZE, progress=False)

    generate_dataset(tmp_path, train_per_class=1, test_per_class=1, size=SIZE, progress=False, workers=1,
                     overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "train" / "scissors" / "scissors_0000.png").is_file()


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="size must be at least 16"):
        generate_dataset(tmp_path, 1, 1, size=8, progress=False)
    with pytest.raises(ValueError, match="seed must be"):
        generate_dataset(tmp_path, 1, 1, size=SIZE, seed=-1, progress=False)
    with pytest.raises(ValueError, match="Unknown class 'lizard'"):
        datagen.render_hand("lizard", np.random.default_rng(0), SIZE)


def test_command_line_writes_data_calibration_and_contact_sheet(tmp_path, capsys):
    argv = ["--out", str(tmp_path / "data"), "--calibration-out", str(tmp_path / "cal"),
            "--train-per-class", "2", "--test-per-class", "1", "--calibration-per-class", "1",
            "--size", str(SIZE), "--workers", "1", "--contact-sheet", str(tmp_path / "sheet.png")]
    assert datagen.main(argv) == 0
    output = capsys.readouterr()
    assert "wrote 6 train, 3 test images" in output.out
    assert "wrote 3 calibration images" in output.out
    assert "train: 6/6 images" in output.err
    with Image.open(tmp_path / "sheet.png") as sheet:
        assert sheet.mode == "RGB" and sheet.height > 3 * 100

    assert datagen.main(argv) == 0
    output = capsys.readouterr().out
    assert "already holds this data set" in output
    assert "already holds 3 calibration images" in output

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.jpg").write_bytes(b"x")
    assert datagen.main(["--out", str(tmp_path / "other"), "--size", str(SIZE), "--train-per-class", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
