"""A damaged taught head never stops the device (issue 19 item 2): Head.load refuses a head whose mean and scale
share a wrong shape (a chained comparison let it through), and the daemon, finding a damaged or mismatched
taught head, serves the bundle's own head and says why in its log and /status. Real bundle, real interpreter,
real daemon process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import teach_bundle

REPO = Path(__file__).resolve().parent.parent


def test_head_load_refuses_mean_and_scale_that_share_a_wrong_shape(tmp_path):
    from device.heads.head import Head

    path = tmp_path / "head.npz"
    np.savez(path, weights=np.zeros((8, 3), np.float32), bias=np.zeros(3, np.float32),
             mean=np.zeros(5, np.float32), scale=np.ones(5, np.float32))
    with pytest.raises(ValueError, match="inconsistent head shapes"):
        Head.load(path)
    np.savez(path, weights=np.zeros((8, 3), np.float32), bias=np.zeros(3, np.float32),
             mean=np.zeros(8, np.float32), scale=np.ones(5, np.float32))
    with pytest.raises(ValueError, match="inconsistent head shapes"):
        Head.load(path)


@pytest.fixture()
def device_bundle_copy(tmp_path_factory, tmp_path):
    from bench.teach import light_copy

    return light_copy(teach_bundle.shared_teach_bundle(tmp_path_factory), tmp_path / "bundle")


def damage(heads: Path, revision: int = 1, labels=("blue", "green", "red")) -> Path:
    """A taught revision whose mean and scale share a wrong shape (5 wide; the model's embedding is 8)."""
    folder = heads / f"r{revision:04d}"
    folder.mkdir(parents=True)
    np.savez(folder / "head.npz", weights=np.zeros((8, 3), np.float32), bias=np.zeros(3, np.float32),
             mean=np.zeros(5, np.float32), scale=np.ones(5, np.float32))
    (folder / "labels.txt").write_text("".join(f"{label}\n" for label in labels))
    (folder / "meta.json").write_text(json.dumps({"revision": revision, "parent": 0, "accuracy": 0.9}))
    (heads / "current.json").write_text(json.dumps({"revision": revision}))
    return folder


def replay(bundle, frames, *extra, env=None):
    """The daemon over an image folder, once, without HTTP -> (exit code, result lines, stderr)."""
    done = subprocess.run([sys.executable, "-m", "device", "--bundle", str(bundle), "--source", f"images:{frames}",
                           "--once", "--http", "off", "--threads", "1", "--max-fps", "0", *map(str, extra)],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})))
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, [line for line in results if "label" in line], done.stderr


def test_a_damaged_taught_head_falls_back_to_the_bundles_own_head(device_bundle_copy, tmp_path_factory, tmp_path):
    frames = teach_bundle.images_root(tmp_path_factory) / "test" / "rock"
    damage(device_bundle_copy / "heads")  # a bundle from before the state folder: heads/ inside it
    code, results, stderr = replay(device_bundle_copy, frames)
    assert code == 0, stderr
    assert results and all(result["model"] == "tiny:int8" for result in results)  # the bundle's own head
    assert {result["label"] for result in results} <= {"paper", "rock", "scissors", "unknown"}
    assert "the taught head is not served, the bundle's own head is" in stderr
    assert "inconsistent head shapes" in stderr and "python -m device undo --bundle" in stderr


def test_the_device_archive_ships_every_file_its_manifest_names_and_the_device_reads_the_bundle_head(
        tmp_path_factory, tmp_path):
    """Issue 19 item 17: the manifest names tflite/head.npz (the bundle's own head in numpy, with its sha256); the
    archive ships it, and `python -m device status` on the unpacked bundle reads and checks it."""
    import tarfile

    from deploy.bundle import build

    info = build(teach_bundle.shared_teach_bundle(tmp_path_factory), tmp_path / "device.tar.gz", ["int8"],
                 force=True)  # the teach bundle's parity was skipped (test_convert covers parity)
    with tarfile.open(info["archive"]) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    bundle = next((tmp_path / "unpacked").iterdir()) / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    named = [entry["file"] for entry in manifest["models"].values()] + [manifest["embedding"]["head_file"]]
    assert named == ["tflite/model_int8.tflite", "tflite/head.npz"]
    for relative in named:
        assert (bundle / relative).is_file(), f"the manifest names {relative} but the archive lacks it"
    shown = subprocess.run([sys.executable, "-m", "device", "status", "--bundle", str(bundle), "--json"], cwd=REPO,
                           capture_output=True, text=True, timeout=60, check=False,
                           env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["bundle_head"] == "tflite/head.npz: 8 x 3, sha256 as in the manifest"
