"""The data set's paths and deletes (issue 26 items 6-8): one path resolution for every user-given data-set
path, deletes that never lose the last undo, symlinked frames handled as the links themselves, an atomic
move that never replaces, a cross-process edit lock, and an empty class that comes back on undo. Real files,
a real tmpfs mount for a cross-device rename (tests/full_disk.py), real processes."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from device.teach.dataset import Dataset, DatasetError
from tests.full_disk import tmpfs

REPO = Path(__file__).resolve().parent.parent


def filled(root: Path, counts: dict) -> Dataset:
    dataset = Dataset(root, min_free_bytes=0)
    rng = np.random.default_rng(3)
    for label, count in counts.items():
        dataset.add_class(label)
        for _ in range(count):
            dataset.save(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), label)
    return dataset


def frames(root: Path, label: str) -> list:
    return sorted(f"{label}/{path.name}" for path in (root / label).iterdir() if not path.name.startswith("."))


def run_cli(*arguments) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device", "dataset", *map(str, arguments)], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=60,
                          check=False)


def test_an_absolute_path_is_refused_and_the_last_undo_stays(tmp_path):
    dataset = filled(tmp_path / "d", {"rock": 3})
    rock = frames(dataset.root, "rock")
    first = dataset.remove(rock[:1])
    bytes_before = dataset.bytes
    answer = dataset.remove([str(dataset.root / rock[1])])  # absolute, inside the data set
    assert answer["removed"] == [] and answer["undo"] is None and "outside the data set" in answer["failed"][0]["error"]
    assert (dataset.root / rock[1]).is_file() and dataset.bytes == bytes_before
    assert not any(json.loads(line).get("file", "").startswith("/")
                   for line in (dataset.root / "index.jsonl").read_text().splitlines())
    assert dataset.restore(first["undo"])["restored"] == rock[:1]  # the frame deleted before is not lost


def test_a_remove_whose_renames_all_fail_keeps_the_last_undo_and_prints_no_undo_id(tmp_path):
    """The class folder is a real tmpfs mount: the rename into .deleted/ fails with EXDEV, as on a data set
    whose class folder is another file system."""
    dataset = filled(tmp_path / "d", {"paper": 2, "rock": 0})
    first = dataset.remove(frames(dataset.root, "paper")[:1])
    with tmpfs(dataset.root / "rock", "1m"):
        dataset.save(np.zeros((24, 32, 3), np.uint8), "rock")
        rock = frames(dataset.root, "rock")
        done = run_cli("rm", "--data", dataset.root, *rock)
        assert done.returncode == 2 and json.loads(done.stdout)["undo"] is None, done.stdout
        assert "dataset restore" not in done.stderr and frames(dataset.root, "rock") == rock
    assert dataset.restore(first["undo"])["restored"] == frames(dataset.root, "paper")[:1]


def linked(tmp_path) -> tuple:
    dataset = filled(tmp_path / "d", {"paper": 1, "rock": 1})
    target = dataset.root / frames(dataset.root, "paper")[0]
    link = dataset.root / "rock" / "20990101-000000-0001.jpg"
    link.symlink_to(Path("..") / "paper" / target.name)
    return dataset, target, link


def test_removing_a_symlinked_frame_removes_the_link_and_undo_brings_the_link_back(tmp_path):
    dataset, target, link = linked(tmp_path)
    done = run_cli("rm", "--data", dataset.root, link)  # by its absolute path, as a shell user names it
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["removed"] == ["rock/20990101-000000-0001.jpg"]
    assert target.is_file() and not os.path.lexists(link)  # the other class keeps its frame; nothing dangles
    assert dataset.restore(answer["undo"])["restored"] == ["rock/20990101-000000-0001.jpg"]
    assert link.is_symlink() and link.resolve() == target.resolve()


def test_moving_a_symlinked_frame_moves_the_link_by_one_rename(tmp_path):
    dataset, target, link = linked(tmp_path)
    dataset.add_class("scissors")
    answer = dataset.move(["rock/20990101-000000-0001.jpg"], "scissors")
    moved = dataset.root / answer["moved"][0]["to"]
    assert target.is_file() and moved.is_symlink() and not os.path.lexists(link)


def test_a_move_never_replaces_a_frame_of_the_same_name(tmp_path):
    dataset = filled(tmp_path / "d", {"paper": 1, "rock": 1})
    taken = dataset.root / "paper" / "same.jpg"
    taken.write_bytes(b"paper's frame")
    (dataset.root / "rock" / "same.jpg").write_bytes(b"rock's frame")
    answer = dataset.move(["rock/same.jpg"], "paper")
    assert answer["moved"][0]["to"] != "paper/same.jpg" and taken.read_bytes() == b"paper's frame"
    assert (dataset.root / answer["moved"][0]["to"]).read_bytes() == b"rock's frame"


SPELLINGS = ["paper/../.deleted/{batch}/rock/{name}", ".deleted/{batch}/rock/{name}",
             "./.deleted/{batch}/rock/{name}", "paper/./../.deleted/{batch}/rock/{name}",
             "paper//../.deleted/{batch}/rock/{name}", "{root}/.deleted/{batch}/rock/{name}",
             ".DELETED/{batch}/rock/{name}", "paper/.././.deleted/{batch}/rock/{name}"]


def test_hidden_folders_are_refused_in_every_spelling(tmp_path):
    dataset = filled(tmp_path / "d", {"paper": 1, "rock": 1})
    name = frames(dataset.root, "rock")[0].split("/")[1]
    batch = dataset.remove([f"rock/{name}"])["undo"]
    spelled = [spelling.format(batch=batch, name=name, root=dataset.root) for spelling in SPELLINGS]
    assert dataset.move(spelled, "paper")["moved"] == []
    assert dataset.remove(spelled)["removed"] == []
    for spelling in spelled:
        with pytest.raises(DatasetError):
            dataset.resolve_any(spelling)
    assert dataset.restore(batch)["restored"] == [f"rock/{name}"]  # the undo batch is whole


def test_an_empty_class_deleted_and_undone_comes_back(tmp_path):
    dataset = filled(tmp_path / "d", {"paper": 1, "empty": 0})
    answer = dataset.remove_class("empty")
    assert dataset.class_names() == ["paper"]
    dataset.restore(answer["undo"])
    assert dataset.class_names() == ["empty", "paper"]


HOLDER = """
import sys
from device.teach.dataset import Dataset
dataset = Dataset(sys.argv[1], min_free_bytes=0)
with dataset.edits:
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_edits_wait_for_another_process_holding_the_edit_lock(tmp_path):
    dataset = filled(tmp_path / "d", {"rock": 2})
    rock = frames(dataset.root, "rock")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(dataset.root)], cwd=REPO, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO)), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == "held\n"
        answers = []
        remover = threading.Thread(target=lambda: answers.append(dataset.remove(rock[:1])))
        remover.start()
        remover.join(1.0)
        assert remover.is_alive() and frames(dataset.root, "rock") == rock  # it waits: nothing moved yet
        holder.stdin.write("\n")
        holder.stdin.flush()
        remover.join(30)
        assert answers and answers[0]["removed"] == rock[:1]
    finally:
        holder.kill()
        holder.wait()


def test_a_class_made_again_after_its_delete_takes_its_frames_back_on_undo(tmp_path):
    dataset = filled(tmp_path / "d", {"rock": 2})
    old = frames(dataset.root, "rock")
    answer = dataset.remove_class("rock")
    dataset.add_class("rock")
    dataset.save(np.zeros((24, 32, 3), np.uint8), "rock")  # recorded meanwhile
    bytes_before = dataset.bytes
    back = dataset.restore(answer["undo"])
    assert back["restored"] == old and back["failed"] == [] and back["classes"] == []
    assert len(frames(dataset.root, "rock")) == 3 and dataset.bytes > bytes_before
    assert not (dataset.root / ".deleted" / answer["undo"]).exists()


def test_a_link_out_of_the_data_set_is_not_a_frame_and_is_left_alone(tmp_path):
    dataset = filled(tmp_path / "d", {"paper": 1})
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"not yours")
    (dataset.root / "paper" / "link.jpg").symlink_to(outside)
    (dataset.root / "paper" / "nowhere.jpg").symlink_to(tmp_path / "missing.jpg")
    for relative in ("paper/link.jpg", "paper/nowhere.jpg"):
        with pytest.raises(DatasetError, match="links outside the data set"):
            dataset.resolve_any(relative)
        assert dataset.remove([relative])["removed"] == [] and dataset.move([relative], "paper")["moved"] == []
    assert outside.read_bytes() == b"not yours" and (dataset.root / "paper" / "link.jpg").is_symlink()


def test_without_renameat2_a_move_still_never_replaces(tmp_path, monkeypatch):
    """A C library older than glibc 2.28 has no renameat2 (this machine's has): the look-then-rename path,
    under the edit lock, must keep the same promise."""
    from device.teach.dataset import files

    monkeypatch.setattr(files, "_renameat2", lambda: None)
    dataset = filled(tmp_path / "d", {"paper": 1, "rock": 1})
    (dataset.root / "paper" / "same.jpg").write_bytes(b"paper's frame")
    (dataset.root / "rock" / "same.jpg").write_bytes(b"rock's frame")
    answer = dataset.move(["rock/same.jpg"], "paper")
    assert (dataset.root / "paper" / "same.jpg").read_bytes() == b"paper's frame"
    assert (dataset.root / answer["moved"][0]["to"]).read_bytes() == b"rock's frame"
