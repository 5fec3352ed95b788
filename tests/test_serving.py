"""The serving plan (device/serving.py, issue 26 Root 1): one decision of what serves, written to
STATE/serving.json at every load and read by the shell commands; a tuning record is validated before use;
a taught head is followed whatever the tuner chose.

Real converted bundle (float32 and int8 with an embedding output), real interpreter, real daemons and shell
commands as subprocesses, real HTTP. The tuning records are written by the test: that is the hostile input."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import teach_bundle

from device import tune
from device.manifest import load_manifest, save_manifest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def served_bundle(tmp_path_factory, tmp_path):
    """A copy of the teach bundle whose int8 and float32 models both passed parity (both tuner candidates), and
    a state folder whose data set holds the training images under new class names."""
    from bench.teach import light_copy

    bundle = light_copy(teach_bundle.shared_teach_bundle(tmp_path_factory), tmp_path / "bundle")
    manifest = load_manifest(bundle)
    manifest.parity = "passed"
    for entry in manifest.models.values():
        entry.parity = "passed"
    save_manifest(manifest, bundle)
    state = tmp_path / "state"
    images = teach_bundle.images_root(tmp_path_factory)
    for label, colour in {"paper": "red", "rock": "green", "scissors": "blue"}.items():
        shutil.copytree(images / "train" / label, state / "dataset" / colour)
    return bundle, state, f"images:{images / 'test'}"


def write_tuning(bundle, state, source, rows: list) -> Path:
    """A tuning record filed where the daemon looks for this bundle, device and source, with ROWS as its table."""
    manifest = load_manifest(bundle)
    plan = tune.make_plan(bundle, manifest, source)
    table = [tune.Row(fmt, threads, median_ms=ms, p25_ms=ms - 0.05, p75_ms=ms + 0.05, frames=50)
             for fmt, threads, ms in rows]
    chosen = min(table, key=lambda row: row.median_ms)
    record = tune.build_record(bundle, manifest, plan, table, chosen, source, 1.0)
    return tune.write_record(state, record)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Daemon:
    def __init__(self, *arguments):
        self.port = free_port()
        command = [sys.executable, "-m", "device", *map(str, arguments), "--http", f"127.0.0.1:{self.port}",
                   "--emit", "off", "--max-fps", "20"]
        self.process = subprocess.Popen(command, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def status(self, predicate, timeout=60) -> dict:
        deadline, status = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"exit {self.process.returncode}: {self.process.stderr.read()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=5) as response:
                    status = json.loads(response.read())
                if predicate(status):
                    return status
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"no such /status within {timeout} s; the last: {status}")

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=10)
        return stderr


def device(*arguments, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "device", *map(str, arguments)], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=120)
    assert not check or done.returncode == 0, done.stderr
    return done


@pytest.mark.parametrize("hostile, problem", [
    ({"format": "../../etc/x"}, "names the format '../../etc/x'"),
    ({"threads": 0}, "has threads 0"),
    ({"format": "float16"}, "names the format 'float16'"),  # a format this bundle lacks
])
def test_a_corrupt_or_hostile_tuning_record_never_stops_the_daemon_int8_serves_and_status_says_why(
        served_bundle, hostile, problem):
    """Issue 26 item 1: such a record made the daemon (and teach, status, undo) exit 2 for good."""
    bundle, state, source = served_bundle
    path = write_tuning(bundle, state, source, [("int8", 1, 9.0), ("float32", 1, 3.0)])
    record = json.loads(path.read_text())
    record["table"][1].update(hostile)
    record["choice"].update(hostile)
    path.write_text(json.dumps(record))
    daemon = Daemon("--bundle", bundle, "--source", source, "--state-dir", state, "--tune-seconds", 0)
    try:
        status = daemon.status(lambda s: s["frames"] > 0)
    finally:
        stderr = daemon.stop()
    assert status["model"]["format"] == "int8" and status["tuning"]["how"] == "default"
    assert problem in status["tuning"]["reason"] and str(path) in status["tuning"]["reason"]
    assert f"the tuning record {path} is not used" in stderr
    plan = json.loads((state / "serving.json").read_text())
    assert plan["model"] == "int8" and plan["sha256"] == load_manifest(bundle).models["int8"].sha256
    shown = device("status", "--bundle", bundle, "--state-dir", state, "--json")
    assert json.loads(shown.stdout)["model_sha256"] == plan["sha256"]


def test_a_hostile_record_is_tuned_again_at_start(served_bundle):
    bundle, state, source = served_bundle
    path = write_tuning(bundle, state, source, [("int8", 1, 9.0), ("../../etc/x", 1, 3.0)])
    daemon = Daemon("--bundle", bundle, "--source", source, "--state-dir", state, "--tune-seconds", 1)
    try:
        status = daemon.status(lambda s: s["frames"] > 0)
    finally:
        stderr = daemon.stop()
    assert "tuning again: measuring" in stderr
    assert status["tuning"]["how"] == "tuned" and status["model"]["format"] in ("int8", "float32")
    assert {row["format"] for row in json.loads(path.read_text())["table"]} == {"int8", "float32"}  # replaced


def test_a_shell_teach_then_a_daemon_start_serves_the_taught_head_whatever_the_tuner_chose(served_bundle):
    """Issue 26 Root 1: the shell teach wrote int8's heads, the daemon's tuning chose float32, and the daemon
    served an untaught head (44.9% instead of 67.2% on held-out photos)."""
    bundle, state, source = served_bundle
    taught = device("teach", "--bundle", bundle, "--state-dir", state, "--data", state / "dataset", "--force",
                    "--threads", 1, "--json")
    assert json.loads(taught.stdout.splitlines()[-1])["accepted"]
    write_tuning(bundle, state, source, [("int8", 1, 9.0), ("int8", 2, 9.0), ("float32", 1, 3.0),
                                         ("float32", 2, 3.0)])  # float32 is three times faster
    daemon = Daemon("--bundle", bundle, "--source", source, "--state-dir", state)
    try:
        status = daemon.status(lambda s: s["frames"] > 0)
    finally:
        daemon.stop()
    assert status["head"]["source"] == "taught" and status["head"]["labels"] == ["blue", "green", "red"]
    assert status["model"]["format"] == "int8" and status["tuning"]["how"] == "taught head"
    assert "follows the taught head" in status["tuning"]["reason"]


def test_shell_commands_act_on_the_model_and_threads_the_daemon_serves(served_bundle):
    """Issue 26 item 2: a daemon started with --threads 1 serves the format fastest at 1 thread; a shell status
    or teach without --model took the record's overall choice (another format: heads the daemon never reads)."""
    bundle, state, source = served_bundle
    write_tuning(bundle, state, source, [("int8", 1, 3.0), ("float32", 1, 9.0), ("int8", 2, 9.0),
                                         ("float32", 2, 1.0)])
    manifest = load_manifest(bundle)
    daemon = Daemon("--bundle", bundle, "--source", source, "--state-dir", state, "--threads", 1)
    try:
        status = daemon.status(lambda s: s["frames"] > 0)
        assert (status["model"]["format"], status["model"]["threads"]) == ("int8", 1)
        shown = json.loads(device("status", "--bundle", bundle, "--state-dir", state, "--json").stdout)
        assert shown["model_sha256"] == manifest.models["int8"].sha256
        taught = device("teach", "--bundle", bundle, "--state-dir", state, "--data", state / "dataset", "--force",
                        "--json")
        assert json.loads(taught.stdout.splitlines()[-1])["accepted"]
        status = daemon.status(lambda s: s["head"]["source"] == "taught")  # the daemon reads what was taught
        assert status["head"]["labels"] == ["blue", "green", "red"]
    finally:
        daemon.stop()
    plan = json.loads((state / "serving.json").read_text())
    assert (plan["format"], plan["threads"], plan["head_key"]) == ("int8", 1, manifest.models["int8"].sha256)


@pytest.mark.slow
def test_a_sighup_with_a_new_model_refits_its_head_and_a_flipped_format_never_serves_a_stale_head(served_bundle):
    """Issue 26 items 3 and 4: a SIGHUP with a new model served the model's own head (taught classes gone,
    head.refit null) until a restart; a format's store, once it had a head, was never re-fitted, so after the
    served format flipped back an old head with old classes served."""
    bundle, state, source = served_bundle
    teach = ("teach", "--bundle", bundle, "--state-dir", state, "--force", "--threads", 1, "--json")
    assert json.loads(device(*teach, "--data", state / "dataset").stdout.splitlines()[-1])["accepted"]
    daemon = Daemon("--bundle", bundle, "--source", source, "--state-dir", state, "--tune-seconds", 0)
    try:
        status = daemon.status(lambda s: s["frames"] > 0)
        assert status["head"]["source"] == "taught" and status["model"]["format"] == "int8"
        manifest = load_manifest(bundle)  # a new int8 model file (other bytes, so another sha256)
        entry = manifest.models["int8"]
        path = bundle / entry.file
        path.write_bytes(path.read_bytes() + b"\0" * 64)
        from device.manifest import sha256_file

        entry.sha256, entry.size_bytes = sha256_file(path), path.stat().st_size
        save_manifest(manifest, bundle)
        daemon.process.send_signal(signal.SIGHUP)
        status = daemon.status(lambda s: s["model"]["sha256"] == entry.sha256
                               and (s["head"].get("refit") or {}).get("state") == "done", timeout=90)
        status = daemon.status(lambda s: s["head"]["source"] == "taught")
        assert status["head"]["labels"] == ["blue", "green", "red"]
    finally:
        daemon.stop()
    float32 = ("--bundle", bundle, "--source", source, "--state-dir", state, "--tune-seconds", 0, "--model", "float32")
    daemon = Daemon(*float32)
    try:
        status = daemon.status(lambda s: (s["head"].get("refit") or {}).get("state") == "done", timeout=90)
    finally:
        daemon.stop()
    # the classes change in int8's store; float32's store was fitted before: it must not serve the old classes
    shutil.copytree(state / "dataset" / "red", state / "dataset" / "yellow")
    shutil.rmtree(state / "dataset" / "red")
    taught = device(*teach, "--data", state / "dataset", "--model", "int8")
    assert json.loads(taught.stdout.splitlines()[-1])["labels"] == ["blue", "green", "yellow"]
    daemon = Daemon(*float32)
    try:
        status = daemon.status(lambda s: (s["head"].get("refit") or {}).get("state") == "done", timeout=90)
        status = daemon.status(lambda s: s["head"]["labels"] == ["blue", "green", "yellow"])
        assert status["model"]["format"] == "float32" and status["head"]["source"] == "taught"
    finally:
        daemon.stop()


def test_a_shell_teach_for_an_edge_tpu_daemon_embeds_with_int8_on_the_cpu():
    """Issue 26 item 2: the record's choice could be int8_edgetpu, and a shell teach then opened the Edge TPU the
    daemon holds. One function maps the Edge TPU to int8 (its heads are int8's), whatever the spelling."""
    from device.heads.store import head_format
    from device.serving import teach_model

    for served in ("int8_edgetpu", "edgetpu", "edgetpu@usb:0", "tflite/model_int8_edgetpu.tflite@pci:0"):
        assert teach_model(served) == "int8", served
    assert teach_model("float16") == "float16" and teach_model("my/model.tflite") == "my/model.tflite"
    assert head_format("int8_edgetpu") == "int8" and head_format("float32") == "float32"
