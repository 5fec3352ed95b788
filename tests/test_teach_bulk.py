"""Many frames at once (issue 20 item 4): device/teach/dataset/edits.py: move, remove, restore, class rename and
delete on real files, and ``python -m device dataset mv | rm | restore`` as a subprocess. The HTTP side is in
tests/test_teach_http.py, the Teach view's in tests/test_teach_browser.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device.teach.dataset import MAX_BATCH, Dataset, DatasetError

REPO = Path(__file__).resolve().parent.parent


def filled(root: Path, counts: dict) -> Dataset:
    dataset = Dataset(root, min_free_bytes=0)
    rng = np.random.default_rng(7)
    for label, count in counts.items():
        dataset.add_class(label)
        for _ in range(count):
            dataset.save(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), label)
    return dataset


def names(root: Path, label: str) -> list:
    return sorted(path.name for path in (root / label).glob("*.jpg"))


def test_move_is_per_frame_and_reports_each(tmp_path):
    dataset = filled(tmp_path / "d", {"rock": 4, "paper": 1})
    rock = [f"rock/{name}" for name in names(dataset.root, "rock")]
    bytes_before = dataset.bytes
    answer = dataset.move(rock[:3] + ["rock/missing.jpg", "../outside.jpg"], "paper")
    assert [item["file"] for item in answer["moved"]] == rock[:3]
    assert [item["file"] for item in answer["failed"]] == ["rock/missing.jpg", "../outside.jpg"]
    assert all("\n" not in item["error"] and str(tmp_path) not in item["error"] for item in answer["failed"])
    assert names(dataset.root, "rock") == [rock[3].split("/")[1]] and len(names(dataset.root, "paper")) == 4
    assert dataset.bytes == bytes_before
    index = [json.loads(line) for line in (dataset.root / "index.jsonl").read_text().splitlines()]
    assert sum(record.get("from", "").startswith("rock/") for record in index) == 3
    with pytest.raises(DatasetError, match="does not exist"):
        dataset.move(rock[3:], "scissors")  # an unknown class: nothing moves
    assert len(names(dataset.root, "rock")) == 1


def test_remove_then_restore_brings_the_frames_back_and_only_the_newest_batch(tmp_path):
    dataset = filled(tmp_path / "d", {"rock": 3, "paper": 2})
    rock = [f"rock/{name}" for name in names(dataset.root, "rock")]
    bytes_before = dataset.bytes
    first = dataset.remove(rock[:1])
    second = dataset.remove(rock[1:] + ["rock/missing.jpg"])
    assert second["removed"] == rock[1:] and second["failed"][0]["file"] == "rock/missing.jpg"
    assert names(dataset.root, "rock") == [] and dataset.bytes < bytes_before
    assert [c["count"] for c in dataset.summary()] == [2, 0]  # .deleted/ is not a class, nor counted
    with pytest.raises(DatasetError, match="nothing to undo"):
        dataset.restore(first["undo"])  # a newer delete replaced it
    assert dataset.restore(second["undo"])["restored"] == sorted(rock[1:])
    assert len(names(dataset.root, "rock")) == 2
    with pytest.raises(DatasetError, match="nothing to undo"):
        dataset.restore(second["undo"])
    with pytest.raises(DatasetError, match="nothing to undo"):
        dataset.restore("../../etc")


def test_a_delete_that_removes_nothing_keeps_the_last_undo(tmp_path):
    dataset = filled(tmp_path / "d", {"rock": 2})
    rock = [f"rock/{name}" for name in names(dataset.root, "rock")]
    first = dataset.remove(rock[:1])
    assert dataset.remove(["rock/missing.jpg"])["undo"] is None  # a delete where every frame failed
    for refused in ([], ["x.jpg"] * (MAX_BATCH + 1)):  # refused batches
        with pytest.raises(DatasetError):
            dataset.remove(refused)
    assert dataset.restore(first["undo"])["restored"] == rock[:1]  # the first delete can still be undone


def test_batches_are_bounded(tmp_path):
    dataset = filled(tmp_path / "d", {"rock": 1})
    with pytest.raises(DatasetError, match=f"at most {MAX_BATCH}"):
        dataset.remove(["rock/x.jpg"] * (MAX_BATCH + 1))
    with pytest.raises(DatasetError, match="list of data-set paths"):
        dataset.move("rock/x.jpg", "rock")


def test_class_rename_delete_and_undo(tmp_path):
    dataset = filled(tmp_path / "d", {"rock": 2, "paper": 1})
    with pytest.raises(DatasetError, match="exists already"):
        dataset.rename_class("rock", "paper")
    with pytest.raises(DatasetError, match="is not allowed"):
        dataset.rename_class("rock", "no/slash")
    assert dataset.rename_class("rock", "stone") == "stone"
    assert [c["name"] for c in dataset.summary()] == ["paper", "stone"]
    answer = dataset.remove_class("stone")
    assert [c["name"] for c in dataset.summary()] == ["paper"]
    assert len(dataset.restore(answer["undo"])["restored"]) == 2
    assert [c["count"] for c in dataset.summary()] == [1, 2]


def test_frames_pages_the_whole_class(tmp_path):
    dataset = filled(tmp_path / "d", {"rock": 11})
    everything = sorted((f"rock/{name}" for name in names(dataset.root, "rock")), reverse=True)
    pages = [dataset.frames("rock", offset, 4) for offset in (0, 4, 8)]
    assert [page["total"] for page in pages] == [11] * 3
    assert sum((page["files"] for page in pages), []) == everything


def run_cli(*arguments) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device", "dataset", *map(str, arguments)], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=60,
                          check=False)


def test_the_dataset_command_moves_removes_and_restores(tmp_path):
    dataset = filled(tmp_path / "d", {"rock": 3, "paper": 1})
    rock = [f"rock/{name}" for name in names(dataset.root, "rock")]
    done = run_cli("mv", "--data", dataset.root, "--to", "paper", rock[0], dataset.root / rock[1])
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["moved"]) == 2 and len(names(dataset.root, "paper")) == 3
    done = run_cli("rm", "--data", dataset.root, rock[2], "rock/missing.jpg")
    assert done.returncode == 2 and "rock/missing.jpg" in done.stderr
    answer = json.loads(done.stdout)
    assert answer["removed"] == [rock[2]] and "dataset restore" in done.stderr
    done = run_cli("restore", "--data", dataset.root, answer["undo"])
    assert done.returncode == 0 and names(dataset.root, "rock") == [rock[2].split("/")[1]]
    done = run_cli("mv", "--data", tmp_path / "nowhere", "--to", "paper", rock[0])
    assert done.returncode == 2 and "is not a folder" in done.stderr and not (tmp_path / "nowhere").exists()
