"""The capture writer with real files: atomic JPEG writes of the full frame, the JSON-lines index, the size
limit and the free-space floor (a floor set above the real free space), the uncertain ring bounded by count
and by megabytes (oldest dropped first), and paths that try to leave the data set."""

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from device.teach.dataset import Dataset, DatasetError, DatasetFull


def frame(seed: int, height: int = 120, width: int = 160) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_save_writes_the_full_frame_atomically_with_an_index_line(tmp_path):
    dataset = Dataset(tmp_path / "ds", min_free_bytes=0)
    dataset.add_class("paper")
    relative, count = dataset.save(frame(0), "paper", source="images:x", model="tiny:int8",
                                   reading={"label": "rock", "confidence": 0.4})
    assert re.fullmatch(r"paper/\d{8}-\d{6}-\d{4}\.jpg", relative) and count == 1
    with Image.open(tmp_path / "ds" / relative) as image:
        assert image.format == "JPEG" and image.size == (160, 120)  # the camera frame, not the model's crop
    assert not [p for p in (tmp_path / "ds" / "paper").iterdir() if p.name.startswith(".")]  # no temp files
    record = json.loads((tmp_path / "ds" / "index.jsonl").read_text().splitlines()[0])
    assert record["file"] == relative and record["label"] == "paper" and record["model"] == "tiny:int8"
    assert record["source"] == "images:x" and record["reading"] == {"label": "rock", "confidence": 0.4}
    assert dataset.bytes == (tmp_path / "ds" / relative).stat().st_size
    assert dataset.summary() == [{"name": "paper", "count": 1, "latest": [{"file": relative}]}]
    assert Dataset(tmp_path / "ds", min_free_bytes=0).bytes == dataset.bytes  # counted again on restart


def test_unknown_classes_and_bad_names_are_refused_with_the_fix(tmp_path):
    dataset = Dataset(tmp_path / "ds", min_free_bytes=0)
    with pytest.raises(DatasetError, match="add it first"):
        dataset.save(frame(0), "rock")
    with pytest.raises(DatasetError, match="use 1-40 letters, digits, '-' or '_'"):
        dataset.add_class("../etc")
    assert not list((tmp_path / "ds").iterdir())


def test_the_size_limit_stops_recording_and_loses_nothing(tmp_path):
    dataset = Dataset(tmp_path / "ds", limit_bytes=60_000, min_free_bytes=0)
    dataset.add_class("paper")
    saved = []
    with pytest.raises(DatasetFull, match="the data set is full.*raise --dataset-limit-mb"):
        for seed in range(20):  # noise JPEGs of ~20-30 kB each
            saved.append(dataset.save(frame(seed), "paper")[0])
    assert 1 <= len(saved) < 20 and dataset.count("paper") == len(saved)
    assert dataset.bytes <= 60_000 and "is full" in dataset.blocked()
    dataset.delete(saved[0])
    assert dataset.count("paper") == len(saved) - 1


def test_the_free_space_floor_stops_recording(tmp_path):
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    dataset = Dataset(tmp_path / "ds", min_free_bytes=free + 10**9)  # a floor above the real free space
    dataset.add_class("paper")
    with pytest.raises(DatasetFull, match=r"the disk is nearly full: .* MB free.*--min-free-mb"):
        dataset.save(frame(0), "paper")
    assert dataset.count("paper") == 0 and dataset.bytes == 0
    dataset.keep_uncertain = 5
    assert dataset.keep(frame(1), "rock", 0.3) is None  # the ring obeys the floor too


def test_the_uncertain_ring_is_bounded_by_count_then_by_megabytes_oldest_first(tmp_path):
    dataset = Dataset(tmp_path / "ds", min_free_bytes=0, keep_uncertain=3)
    ids = [dataset.keep(frame(seed), "rock", 0.2 + seed / 100, source="images:x", model="m") for seed in range(5)]
    assert [entry["id"] for entry in dataset.uncertain()] == ids[:1:-1]  # newest first, the two oldest dropped
    files = sorted(p.name for p in (tmp_path / "ds" / ".uncertain").glob("*.jpg"))
    assert files == sorted(ids[2:])
    assert dataset.uncertain()[0]["confidence"] == 0.24 and dataset.uncertain()[0]["label"] == "rock"
    one = dataset.ring[ids[4]]["bytes"]
    dataset.uncertain_bytes = int(one * 1.5)  # room for one frame: the next keep drops all older ones
    newest = dataset.keep(frame(9), "paper", 0.1)
    assert [entry["id"] for entry in dataset.uncertain()] == [newest]
    assert sorted(p.name for p in (tmp_path / "ds" / ".uncertain").glob("*.jpg")) == [newest]
    assert Dataset(tmp_path / "ds", min_free_bytes=0, keep_uncertain=3).uncertain()[0]["id"] == newest  # persisted


def test_label_and_discard_uncertain_frames(tmp_path):
    dataset = Dataset(tmp_path / "ds", min_free_bytes=0, keep_uncertain=4)
    dataset.add_class("nothing")
    first, second = dataset.keep(frame(0), "rock", 0.3), dataset.keep(frame(1), "paper", 0.2)
    relative = dataset.label_uncertain(first, "nothing")
    assert relative == f"nothing/{first}" and (tmp_path / "ds" / relative).is_file()
    assert dataset.discard_uncertain(second) == second
    assert dataset.uncertain() == [] and not list((tmp_path / "ds" / ".uncertain").glob("*.jpg"))
    index = [json.loads(line) for line in (tmp_path / "ds" / "index.jsonl").read_text().splitlines()]
    assert index[-1]["from"] == "uncertain" and index[-1]["reading"]["label"] == "rock"
    with pytest.raises(DatasetError, match="not in the ring"):
        dataset.discard_uncertain(second)


@pytest.mark.parametrize("relative", ["../outside.jpg", "/etc/passwd", "paper/../../outside.jpg", ".uncertain/x.jpg",
                                      "index.jsonl", ""])
def test_paths_outside_the_data_set_are_refused(tmp_path, relative):
    (tmp_path / "outside.jpg").write_bytes(b"x")
    dataset = Dataset(tmp_path / "ds", min_free_bytes=0)
    dataset.add_class("paper")
    with pytest.raises(DatasetError):
        dataset.delete(relative)
    assert (tmp_path / "outside.jpg").exists()
