"""The capture writer with real files: atomic JPEG writes of the full frame, the JSON-lines index, the size
limit and the free-space floor (a floor set above the real free space), the uncertain ring bounded by count
and by megabytes (oldest dropped first), and paths that try to leave the data set."""

import json
import os
import re
import time

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


# ---- issue 19: one capture writer that owns file names (item 1), class names (item 14) ----------------
WRITER = """
import sys, time
import numpy as np
from device.teach.dataset import Dataset
root, start, count, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
dataset = Dataset(root, min_free_bytes=0)
rng = np.random.default_rng(seed)
frames = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(count)]
time.sleep(max(0.0, start - time.time()))  # both writers start at the same instant
for frame in frames:
    print(dataset.save(frame, "paper")[0], flush=True)
"""


def test_two_processes_capturing_in_the_same_second_lose_no_frame(tmp_path):
    """Two real processes (the daemon and `python -m device capture` are two Dataset objects in two processes)
    write 20 frames each into one class at the same instant: 40 names reported, 40 distinct files on disk,
    40 index lines naming them, and each writer's size count equal to the disk's."""
    import subprocess
    import sys
    from pathlib import Path

    root = tmp_path / "ds"
    Dataset(root, min_free_bytes=0).add_class("paper")
    repo = Path(__file__).resolve().parent.parent
    start = f"{time.time() + 2.0:.3f}"  # time for both interpreters to import numpy and Pillow
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), start, "20", str(seed)], cwd=repo,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, PYTHONPATH=str(repo))) for seed in (1, 2)]
    outputs = [writer.communicate(timeout=60) for writer in writers]
    assert all(writer.returncode == 0 for writer in writers), [error for _, error in outputs]
    reported = [line for out, _ in outputs for line in out.split()]
    on_disk = sorted(f"paper/{path.name}" for path in (root / "paper").iterdir())
    assert len(reported) == 40 and sorted(reported) == on_disk  # nobody overwrote anybody
    index = [json.loads(line) for line in (root / "index.jsonl").read_text().splitlines()]
    assert sorted(record["file"] for record in index) == on_disk
    disk_bytes = sum((root / name).stat().st_size for name in on_disk)
    assert Dataset(root, min_free_bytes=0).bytes == disk_bytes


def test_a_long_lived_writer_counts_what_another_process_wrote(tmp_path):
    """The daemon's Dataset lives for days while `capture` adds frames beside it: its size count (the limit's
    basis) follows the disk, not only its own writes."""
    import subprocess
    import sys
    from pathlib import Path

    root = tmp_path / "ds"
    daemon = Dataset(root, min_free_bytes=0)
    daemon.add_class("paper")
    daemon.save(frame(0), "paper")
    repo = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", WRITER, str(root), "0", "5", "3"], cwd=repo, check=True, timeout=60,
                   env=dict(os.environ, PYTHONPATH=str(repo)), capture_output=True)
    daemon.save(frame(1), "paper")
    assert daemon.bytes == sum(path.stat().st_size for path in (root / "paper").iterdir())
    assert daemon.count("paper") == 7


def test_a_taken_name_is_never_replaced(tmp_path):
    """Whatever the clock and the counter say, a name that exists (another writer's frame) is skipped."""
    dataset = Dataset(tmp_path / "ds", min_free_bytes=0)
    dataset.add_class("paper")
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    taken = tmp_path / "ds" / "paper" / f"{stamp}-0001.jpg"
    taken.write_bytes(b"another writer's frame")
    relative, count = dataset.save(frame(0), "paper")
    assert taken.read_bytes() == b"another writer's frame" and relative != f"paper/{taken.name}" and count == 2
    dataset.keep_uncertain = 2
    kept = dataset.keep(frame(1), "rock", 0.3)
    (tmp_path / "ds" / "paper" / kept).write_bytes(b"a capture with the kept frame's name")
    moved = dataset.label_uncertain(kept, "paper")
    assert moved != f"paper/{kept}" and (tmp_path / "ds" / "paper" / kept).read_bytes().startswith(b"a capture")
    assert dataset.count("paper") == 4 and not list((tmp_path / "ds" / ".uncertain").glob("*.jpg"))


@pytest.mark.parametrize("name", ["paper\n", "paper\r\n", "\npaper", "pa\nper", "a" * 41, "", "pa per", "../x"])
def test_class_names_are_checked_whole_not_up_to_a_trailing_newline(tmp_path, name):
    dataset = Dataset(tmp_path / "ds", min_free_bytes=0)
    with pytest.raises(DatasetError, match="use 1-40 letters, digits, '-' or '_'"):
        dataset.add_class(name)
    assert not list((tmp_path / "ds").iterdir())


def test_a_folder_with_a_newline_is_not_listed_as_a_class(tmp_path):
    (tmp_path / "ds" / "paper\n").mkdir(parents=True)
    (tmp_path / "ds" / "rock").mkdir()
    assert Dataset(tmp_path / "ds", min_free_bytes=0).class_names() == ["rock"]


def test_the_number_of_classes_is_capped(tmp_path):
    from device.teach.dataset import MAX_CLASSES

    dataset = Dataset(tmp_path / "ds", min_free_bytes=0)
    for number in range(MAX_CLASSES):
        dataset.add_class(f"c{number}")
    assert dataset.add_class("c0") == "c0"  # an existing class is no new one
    with pytest.raises(DatasetError, match=f"already has {MAX_CLASSES} classes, the most it takes"):
        dataset.add_class("one-too-many")
    assert not (tmp_path / "ds" / "one-too-many").exists()


def test_without_hard_links_names_are_still_never_replaced(tmp_path, monkeypatch):
    """A data set on FAT (a USB stick) has no hard links: link() fails with EPERM there. This machine's kernel
    cannot mount FAT, so link() is made to fail as it does there; the exclusive-create path must keep the
    same promise."""
    import errno as errors

    def no_links(source, target):
        raise PermissionError(errors.EPERM, "Operation not permitted", str(source), None, str(target))

    monkeypatch.setattr(os, "link", no_links)
    dataset = Dataset(tmp_path / "ds", min_free_bytes=0, keep_uncertain=2)
    dataset.add_class("paper")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time()))
    taken = tmp_path / "ds" / "paper" / f"{stamp}-0001.jpg"
    taken.write_bytes(b"another writer's frame")
    names = [dataset.save(frame(seed), "paper")[0] for seed in range(3)]
    kept = dataset.keep(frame(9), "rock", 0.3)
    names.append(dataset.label_uncertain(kept, "paper"))
    assert taken.read_bytes() == b"another writer's frame" and len(set(names)) == 4
    assert dataset.count("paper") == 5 and not [p for p in (tmp_path / "ds").rglob(".*tmp*")]
