"""--strategy multi-worker for real: two worker processes on loopback ports with a real TF_CONFIG
(MultiWorkerMirroredStrategy over gRPC on CPU), the tiny generated data, 2 epochs of the small model.
Nothing is faked: tests/multiworker_worker.py runs the production train_bundle() and only adds a callback
that saves the final weights (and, when asked, kills its own process) plus dropout off, so that two workers
must compute exactly what one machine computes."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from train.api import run_state

HELPER = REPO / "tests" / "multiworker_worker.py"
EPOCHS = 2
TIMEOUT_S = 420


def free_ports(count: int) -> list:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start(data: Path, out: Path, weights: Path, strategy: str, cluster=None, index=0, *extra, env=None):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "EDGECAM_TEST_WEIGHTS": str(weights), **(env or {})}
    environment.pop("TF_CONFIG", None)
    if cluster:
        environment["TF_CONFIG"] = json.dumps({"cluster": {"worker": cluster},
                                               "task": {"type": "worker", "index": index}})
    return subprocess.Popen([sys.executable, str(HELPER), str(data), str(out), str(EPOCHS), strategy, *extra],
                            cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def start_cluster(data: Path, tmp: Path, *extra, env_of=lambda index: None):
    cluster = [f"127.0.0.1:{port}" for port in free_ports(2)]
    return [start(data, tmp / f"worker{i}", tmp / f"weights{i}.npz", "multi-worker", cluster, i, *extra,
                  env=env_of(i)) for i in range(2)]


def finish(process) -> str:
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"worker still running after {TIMEOUT_S} s:\n{output[-3000:]}")
    assert process.returncode == 0, output[-3000:]
    return output


def load_weights(path: Path) -> list:
    with np.load(path) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def savedmodel_predictions(bundle: Path, images: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    serve = tf.saved_model.load(str(bundle / "saved_model")).signatures["serving_default"]
    return next(iter(serve(tf.constant(images)).values())).numpy()


def heldout_images(data: Path, size=24) -> np.ndarray:
    from PIL import Image

    paths = sorted((data / "test").rglob("*.png"))[:24]
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR), np.float32)
                     for p in paths])


def test_two_workers_train_what_one_machine_trains_and_only_the_chief_exports(tiny_data_dir, tmp_path):
    single = start(tiny_data_dir, tmp_path / "single", tmp_path / "single.npz", "default")
    workers = start_cluster(tiny_data_dir, tmp_path)
    chief_log, other_log = (finish(w) for w in workers)
    finish(single)

    assert "strategy: multi-worker, 2 replica(s)" in chief_log and f"Epoch {EPOCHS}/{EPOCHS}" in other_log
    chief, other = tmp_path / "worker0", tmp_path / "worker1"
    assert (chief / "manifest.json").is_file() and (chief / "saved_model").is_dir()
    for entry in ("manifest.json", "saved_model", "model.keras", "labels.txt"):
        assert not (other / entry).exists(), f"worker 1 wrote {entry}: only the chief may write the bundle"
    assert json.loads((chief / "manifest.json").read_text())["training"]["strategy"] == "multi-worker"

    weights = [load_weights(tmp_path / f"weights{i}.npz") for i in range(2)]
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)  # one all-reduced update per step: bit-equal on every worker
    # Against one machine: the same steps on the same global batches, summed in another order (two half
    # batches, then the all-reduce). Adam turns float noise in near-zero gradients into steps of about the
    # learning rate (1e-3), so the weights agree to a few of those, the predictions closely.
    single_weights = load_weights(tmp_path / "single.npz")
    print("largest weight difference to one machine:", max(float(np.max(np.abs(a - b)))
                                                           for a, b in zip(weights[0], single_weights)))
    for a, b in zip(weights[0], single_weights):
        np.testing.assert_allclose(a, b, atol=5e-3)
    images = heldout_images(tiny_data_dir)
    ours, theirs = savedmodel_predictions(chief, images), savedmodel_predictions(tmp_path / "single", images)
    print("largest probability difference to one machine:", float(np.max(np.abs(ours - theirs))))
    np.testing.assert_allclose(ours, theirs, atol=0.01)
    # Same class wherever the single machine's top two are further apart than twice that tolerance (a 3-epoch
    # tiny model has near-ties, which a 0.01 difference may flip either way).
    top_two = np.sort(theirs, axis=1)[:, -2:]
    clear = (top_two[:, 1] - top_two[:, 0]) > 0.02
    assert clear.any()
    assert (np.argmax(ours, axis=1)[clear] == np.argmax(theirs, axis=1)[clear]).all()


def test_a_killed_worker_and_resume_continue_from_the_last_epoch(tiny_data_dir, tmp_path):
    workers = start_cluster(tiny_data_dir, tmp_path, env_of=lambda i: {"EDGECAM_TEST_KILL_AFTER_EPOCH": "1"} if i else None)
    workers[1].communicate(timeout=TIMEOUT_S)
    assert workers[1].returncode == -signal.SIGKILL
    state = run_state(tmp_path / "worker0")  # the run in progress lives beside the bundle (device/layout.py)
    deadline = time.monotonic() + 60  # the chief saves epoch 1 on its own, then waits for its dead peer
    while time.monotonic() < deadline and json.loads(state.read_text()).get("epochs_done") != 1:
        time.sleep(0.5)
    workers[0].kill()  # what an operator (or Kubernetes) does: restart the whole job
    workers[0].communicate()
    assert not (tmp_path / "worker0" / "manifest.json").exists()

    resumed = [finish(w) for w in start_cluster(tiny_data_dir, tmp_path, "--resume")]
    for log in resumed:
        assert "resuming after epoch 1" in log and f"Epoch {EPOCHS}/{EPOCHS}" in log and "Epoch 1/" not in log
    with open(tmp_path / "worker0" / "history.csv", newline="") as stream:
        assert [row["epoch"] for row in csv.DictReader(stream)] == ["0", "1"]
    assert json.loads((tmp_path / "worker0" / "manifest.json").read_text())["training"]["epochs_run"] == EPOCHS
    for a, b in zip(*(load_weights(tmp_path / f"weights{i}.npz") for i in range(2))):
        np.testing.assert_array_equal(a, b)
