"""The daemon as a real subprocess (python -m device): results on stdout, the HTTP API, SIGTERM within
2 s with exit 0, SIGHUP with a broken bundle keeps the old model, a failing source is retried, bad
bundles exit 2 with the file and the fix, sd_notify over a real socket, the rotating log file."""

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import device_bundle
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def images(bundle):
    return device_bundle.heldout(bundle)[0][1].parent.parent  # the held-out folder (3 classes x 8)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DaemonProcess:
    """``python -m device ...`` with stdout lines collected by a reader thread."""

    def __init__(self, *args, env=None, http=True):
        self.port = free_port() if http is True else None
        address = f"127.0.0.1:{self.port}" if http is True else http or "off"
        command = [sys.executable, "-m", "device", *map(str, args), "--threads", "1", "--http", address]
        environment = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
        self.process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.stderr_lines: list = []
        self.pumps = [threading.Thread(target=self._pump, args=(self.process.stdout, self.lines.put), daemon=True),
                      threading.Thread(target=self._pump, args=(self.process.stderr, self.stderr_lines.append),
                                       daemon=True)]
        for pump in self.pumps:
            pump.start()

    def exit_code(self, timeout: float = 20) -> int:
        """Wait for the process to end and for its output to be read to the end (not a fixed sleep: the reader
        threads may lag behind the exit on a loaded machine) -> its exit code."""
        code = self.process.wait(timeout=timeout)
        for pump in self.pumps:
            pump.join(timeout)
        return code

    @staticmethod
    def _pump(stream, put):
        for line in stream:
            put(line)

    def results(self, count, timeout=15):
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            got.append(json.loads(self.lines.get(timeout=max(0.01, deadline - time.monotonic()))))
        return got

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def wait_status(self, predicate, timeout=15):
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            try:
                status = self.get("/status")[1]
                if predicate(status):
                    return status
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"status never matched; last: {status}; stderr: {''.join(self.stderr_lines)}")

    def terminate(self):
        start = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=10)
        return code, time.monotonic() - start

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def spawn():
    started = []

    def make(*args, **kwargs):
        started.append(DaemonProcess(*args, **kwargs))
        return started[-1]

    yield make
    for daemon in started:
        daemon.kill()


def test_results_on_stdout_http_and_sigterm_within_two_seconds(bundle, images, spawn):
    daemon = spawn("--bundle", bundle, "--source", f"images:{images}", "--max-fps", "100")
    first, second = daemon.results(2)
    assert first["frame"] == 1 and second["frame"] == 2
    assert first["label"] in device_bundle.LABELS + ["unknown"] and first["model"] == "tiny:int8"
    status = daemon.wait_status(lambda s: s["state"] == "running")
    assert status["source"]["state"] == "ok"
    assert daemon.get("/healthz") == (200, {"status": "ok"})
    events = urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/events", timeout=5)  # a client stays
    assert events.readline().startswith(b"retry:")
    code, seconds = daemon.terminate()
    events.close()
    assert code == 0 and seconds < 2.0
    assert any("serving" in line for line in daemon.stderr_lines)


def test_once_replays_every_image_in_order_then_exits_0(bundle, images, spawn):
    daemon = spawn("--bundle", bundle, "--source", f"images:{images}", "--once", "--max-fps", "0",
                   "--smoothing", "1", "--model", "float32", http=False)
    assert daemon.exit_code(timeout=30) == 0
    results = []
    while not daemon.lines.empty():
        results.append(json.loads(daemon.lines.get()))
    expected = [label for label, _ in device_bundle.heldout(bundle)]
    assert [r["frame"] for r in results] == list(range(1, len(expected) + 1))  # none dropped
    agree = sum(r["raw_label"] == label for r, label in zip(results, sorted(expected)))
    assert agree >= 0.9 * len(expected)


def test_sighup_with_a_broken_bundle_keeps_the_old_model(bundle, images, spawn, tmp_path):
    copy = device_bundle.copy_bundle(bundle, tmp_path / "b")
    model = copy / "tflite" / "model_int8.tflite"
    good = model.read_bytes()
    daemon = spawn("--bundle", copy, "--source", f"images:{images}", "--max-fps", "50")
    before = daemon.wait_status(lambda s: s["frames"] > 0)
    model.write_bytes(good[:100])  # truncated: the sha256 no longer matches
    daemon.process.send_signal(signal.SIGHUP)
    status = daemon.wait_status(lambda s: s["errors"] is not None)
    assert "still serving the previous model" in status["errors"] and str(model) in status["errors"]
    assert status["model"]["sha256"] == before["model"]["sha256"]
    frames = status["frames"]
    daemon.wait_status(lambda s: s["frames"] > frames + 5 and s["state"] == "running")  # still classifying
    model.write_bytes(good)  # repaired: the next reload succeeds and clears the error
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_status(lambda s: s["errors"] is None)
    assert daemon.terminate()[0] == 0
    assert any("reload failed" in line for line in daemon.stderr_lines)


def test_failing_source_is_retried_without_exiting_or_spinning(bundle, tmp_path, spawn):
    folder = tmp_path / "later"  # does not exist yet: the "camera" is unplugged
    daemon = spawn("--bundle", bundle, "--source", f"images:{folder}")
    status = daemon.wait_status(lambda s: s["source"]["retries"] >= 3)
    assert status["state"] == "degraded" and status["source"]["state"] == "degraded"
    assert "no such folder" in status["source"]["error"]
    code, body = daemon.get("/healthz")
    assert code == 503 and body["status"] == "degraded" and "no such folder" in body["reason"]
    cpu = cpu_seconds(daemon.process.pid)
    time.sleep(1.0)
    assert cpu_seconds(daemon.process.pid) - cpu < 0.3  # backing off, not spinning
    assert daemon.process.poll() is None
    folder.mkdir()  # "plugged back in"
    for label, path in device_bundle.heldout(bundle)[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    daemon.wait_status(lambda s: s["state"] == "running" and s["source"]["state"] == "ok", timeout=20)
    assert daemon.results(1)[0]["frame"] >= 1
    assert daemon.terminate()[0] == 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("breakage, expected", [
    ("no-bundle", ["does not exist", "python -m train"]),
    ("bad-json", ["manifest.json is not valid JSON", "re-export the bundle"]),
    ("bad-hash", ["model_int8.tflite does not match its sha256", "Copy the bundle again"]),
    ("no-model", ["model_int8.tflite does not exist", "python -m convert"]),
])
def test_bad_bundle_exits_2_naming_the_file_and_the_fix(bundle, tmp_path, spawn, breakage, expected):
    copy = device_bundle.copy_bundle(bundle, tmp_path / "b")
    if breakage == "no-bundle":
        copy = tmp_path / "missing"
    elif breakage == "bad-json":
        (copy / "manifest.json").write_text("{")
    elif breakage == "bad-hash":
        (copy / "tflite" / "model_int8.tflite").write_bytes(b"\0" * 64)
    else:
        (copy / "tflite" / "model_int8.tflite").unlink()
    daemon = spawn("--bundle", copy, "--source", f"images:{tmp_path}", http=False)
    assert daemon.exit_code() == 2
    message = "".join(daemon.stderr_lines)
    assert message.count("\n") == 1 and message.startswith("edgecam: "), message
    for text in expected:
        assert text in message


def test_configuration_errors_exit_2(bundle, spawn):
    daemon = spawn("--bundle", bundle, "--source", "webcam:0", http=False)
    assert daemon.process.wait(timeout=20) == 2
    daemon = spawn("--bundle", bundle, "--source", "images:x", http="0.0.0.0:0")
    assert daemon.exit_code() == 2
    assert "pass --token" in "".join(daemon.stderr_lines)


def test_sd_notify_ready_watchdog_stopping(bundle, images, spawn, tmp_path):
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    receiver.bind(path)
    receiver.settimeout(10)
    daemon = spawn("--bundle", bundle, "--source", f"images:{images}", "--max-fps", "50",
                   env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}, http=False)
    messages = []
    while not any("WATCHDOG=1" in m for m in messages):
        messages.append(receiver.recv(4096).decode())
    assert messages[0].startswith("READY=1")
    daemon.process.send_signal(signal.SIGTERM)
    while "STOPPING=1" not in messages[-1]:
        messages.append(receiver.recv(4096).decode())
    assert daemon.process.wait(timeout=5) == 0
    receiver.close()


def test_log_file_rotates(bundle, images, spawn, tmp_path):
    log = tmp_path / "edgecam.log"
    daemon = spawn("--bundle", bundle, "--source", f"images:{images}", "--max-fps", "0", "--emit", "off",
                   "--log-file", log, "--log-emit", "every", "--log-max-bytes", "4000", "--log-backups", "2",
                   http=False)
    deadline = time.monotonic() + 15
    while not Path(f"{log}.2").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daemon.terminate()[0] == 0
    assert Path(f"{log}.1").exists() and Path(f"{log}.2").exists() and not Path(f"{log}.3").exists()
    assert daemon.lines.empty()  # --emit off: nothing on stdout
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[-1]["event"] == "stop" and all("label" in line or "event" in line for line in lines)
    assert log.stat().st_size <= 4000 + 1000


def test_help_shows_defaults_and_doctor_is_dispatched():
    output = subprocess.run([sys.executable, "-m", "device", "--help"], cwd=REPO, check=False, capture_output=True,
                            text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert output.returncode == 0
    for flag in ("--bundle", "--model", "--source", "--max-fps", "--threads", "--smoothing", "--threshold",
                 "--http", "--token", "--log-file", "--once", "--tune-seconds", "(default: 127.0.0.1:8080)"):
        assert flag in output.stdout


def test_doctor_subcommand_is_handed_over_or_reported_missing():
    output = subprocess.run([sys.executable, "-m", "device", "doctor", "--help"], cwd=REPO, check=False,
                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
    if (REPO / "device" / "doctor.py").exists():
        assert "--bundle is required" not in output.stderr  # device.doctor parsed its own arguments
    else:
        assert output.returncode == 2 and "device.doctor is missing" in output.stderr
