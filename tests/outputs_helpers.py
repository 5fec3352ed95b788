"""Test helpers for device/outputs: a real Mosquitto broker on a free loopback port (anonymous, with a
password file, or with TLS on a CA made here with openssl), a real paho subscriber, and the daemon as a
subprocess. Nothing is faked: only the broker's location is a test choice."""

from __future__ import annotations

import getpass
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


def need_mosquitto() -> None:
    if not MOSQUITTO or not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto is not installed: run `bash scripts/system-deps.sh` (or apt-get install mosquitto "
                    "mosquitto-clients) to run the MQTT tests")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def make_ca(folder: Path) -> dict:
    """A CA and a server certificate for 127.0.0.1/localhost, signed by it (openssl CLI)."""
    folder.mkdir(parents=True, exist_ok=True)

    def ssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=edgecam test CA")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.crt", "-days", "2", "-extfile", "san.ext")
    os.chmod(folder / "server.key", 0o644)
    return {"ca": str(folder / "ca.crt"), "cert": str(folder / "server.crt"), "key": str(folder / "server.key")}


class Broker:
    """mosquitto -c <generated config> on 127.0.0.1:<free port>; restartable on the same port."""

    def __init__(self, folder: Path, users: dict | None = None, tls: dict | None = None):
        need_mosquitto()
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        # as root, mosquitto drops to user 'mosquitto', which cannot read files under a private tmp folder
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", f"user {getpass.getuser()}"]
        if users:
            passwords = self.folder / "passwords"
            passwords.write_text("")
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True,
                               capture_output=True, timeout=30)
            os.chmod(passwords, 0o644)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        self.config = self.folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.process = None
        self.start()

    def start(self) -> None:
        self.log = open(self.folder / "mosquitto.log", "ab")
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=self.log, stderr=self.log)

        def listening():
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", self.port)) == 0
        assert wait_for(listening, 10), (self.folder / "mosquitto.log").read_text()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.log.close()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


class Subscriber:
    """A real paho client subscribed to '#': messages as (topic, payload text, retained)."""

    def __init__(self, broker: Broker, credentials: tuple | None = None, ca: str | None = None):
        import paho.mqtt.client as mqtt

        self.messages: list = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{time.monotonic_ns()}")
        if credentials:
            self.client.username_pw_set(*credentials)
        if ca:
            self.client.tls_set(ca_certs=ca)
        self.client.on_connect = lambda client, *rest: client.subscribe("#", qos=1)
        self.client.on_message = lambda client, userdata, message: self.messages.append(
            (message.topic, message.payload.decode("utf-8"), bool(message.retain)))
        self.client.connect("127.0.0.1", broker.port, keepalive=10)
        self.client.loop_start()

    def on(self, topic: str) -> list:
        return [(payload, retained) for name, payload, retained in list(self.messages) if name == topic]

    def wait(self, topic: str, predicate=lambda payload: True, timeout: float = 10.0):
        return wait_for(lambda: [p for p, _ in self.on(topic) if predicate(p)], timeout)

    def settle(self, timeout: float = 10.0) -> bool:
        """Wait until every retained message is in: the broker sends them on the subscription, before a
        message this client publishes after it (one connection keeps its order)."""
        marker = f"test/settled/{time.monotonic_ns()}"

        def back():
            self.client.publish(marker, "x", qos=1)
            return self.on(marker)
        return bool(wait_for(back, timeout, 0.2))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Daemon:
    """``python -m device ...`` as a subprocess, stdout JSON lines collected, with its HTTP API on a free port."""

    def __init__(self, *args, env=None):
        self.port = free_port()
        command = [sys.executable, "-m", "device", *map(str, args), "--threads", "1", "--http",
                   f"127.0.0.1:{self.port}"]
        environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.stdout: list = []
        self.stderr: list = []
        threading.Thread(target=self._pump, args=(self.process.stdout, self.stdout), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.process.stderr, self.stderr), daemon=True).start()

    @staticmethod
    def _pump(stream, lines):
        for line in stream:
            lines.append(line)

    def status(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            return None

    def wait_status(self, predicate, timeout: float = 20.0) -> dict:
        status = wait_for(lambda: (lambda s: s if s and predicate(s) else None)(self.status()), timeout, 0.1)
        assert status, f"status never matched; last: {self.status()}; stderr: {''.join(self.stderr)[-2000:]}"
        return status

    def results(self) -> list:
        return [json.loads(line) for line in list(self.stdout) if line.startswith("{")]

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=10)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
