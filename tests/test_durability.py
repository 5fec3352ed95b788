"""Durability (issue 26 item 9): a head revision's files and folder are on disk before current.json names it,
and every writer replaces a file through the one atomic write (device/atomic.py). Real files; os.fsync and
os.replace are wrapped only to record which paths reached the disk in which order (the calls still happen)."""

import ast
import os
from pathlib import Path

import numpy as np

from device.atomic import atomic_write

REPO = Path(__file__).resolve().parent.parent


def record_syncs(monkeypatch) -> list:
    events = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

    def fsync(descriptor):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        return real_fsync(descriptor)

    def replace(source, target, *args, **kwargs):
        events.append(("rename", str(target)))
        return real_replace(source, target, *args, **kwargs)

    def rename(source, target, *args, **kwargs):
        events.append(("rename", str(target)))
        return real_rename(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", rename)
    return events


def test_a_head_revision_is_on_disk_before_current_json_names_it(tmp_path, monkeypatch):
    from device.heads.head import Head
    from device.heads.store import HeadStore

    store = HeadStore(tmp_path / "heads", tmp_path, "a" * 64, tmp_path)
    head = Head(np.ones((4, 2), np.float32), np.zeros(2, np.float32), np.zeros(4, np.float32), np.ones(4, np.float32))
    events = record_syncs(monkeypatch)
    assert store.write_revision(head, ["a", "b"], {"data": "x"}) == 1
    current = [index for index, event in enumerate(events) if event == ("rename", str(store.root / "current.json"))]
    assert current, events
    before = {path for kind, path in events[:current[0]] if kind == "fsync"}
    folder = store.root / "r0001"
    for name in ("head.npz", "labels.txt", "meta.json"):  # each file's bytes, under its temporary folder or final
        assert any(Path(path).name.startswith(f".{name}") or Path(path).name == name for path in before), (name, events)
    assert str(store.root) in before  # the folder that holds the renamed revision
    assert str(folder) in before or any(".r0001" in path and Path(path).parent == store.root for path in before)
    after = {path for kind, path in events[current[0]:] if kind == "fsync"}
    assert str(store.root) in after  # and current.json's own rename


def test_atomic_write_syncs_the_file_then_the_folder_and_leaves_nothing_behind(tmp_path, monkeypatch):
    events = record_syncs(monkeypatch)
    atomic_write(tmp_path / "x.json", "{}\n")
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "rename", "fsync"] and events[-1] == ("fsync", str(tmp_path)), events
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"] and (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644


def test_no_writer_replaces_a_file_by_itself():
    """os.replace / os.rename of a file happen in device/atomic.py only, bar the renames that are not a file's
    new content (a folder renamed into place, a log rotation, a data-set move, a checkpoint Keras wrote), and the
    Ansible helper that runs on a host on its own (standard library only, it cannot import device/)."""
    allowed = {"device/atomic.py", "device/layout.py", "device/outputs/logfile.py", "device/teach/dataset/files.py",
               "deploy/ansible/settings.py",
               "device/heads/store.py", "train/api.py", "train/serving.py"}
    found = []
    for folder in ("train", "convert", "device", "deploy", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr in ("replace", "rename") and \
                        isinstance(node.value, ast.Name) and node.value.id == "os" and relative not in allowed:
                    found.append(f"{relative}:{node.lineno}")
    assert not found, found
