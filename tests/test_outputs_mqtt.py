"""MQTT output against a real Mosquitto broker (loopback, free port) and a real paho subscriber: Home
Assistant discovery, retained state, availability and last will (kill -9), results on label change,
reconnect after a broker restart with inference going on, a full offline queue, passwords and TLS on a
CA made here, and a broker that accepts but never reads leaving inference fps unchanged.

Skips (naming scripts/system-deps.sh) where mosquitto is not installed."""

import json
import socket
import threading
import time
import urllib.request

import device_bundle
import pytest
from outputs_helpers import Broker, Daemon, Subscriber, make_ca, need_mosquitto, wait_for

pytestmark = pytest.mark.timeout(120)
TOPIC = "edgecam/tiny"


@pytest.fixture(scope="module")
def images(bundle):
    return device_bundle.heldout(bundle)[0][1].parent.parent  # 3 classes x 8 images: the label changes


@pytest.fixture()
def broker(tmp_path):
    need_mosquitto()
    broker = Broker(tmp_path / "broker")
    yield broker
    broker.stop()


def run_daemon(bundle, images, *extra, env=None):
    return Daemon("--bundle", bundle, "--source", f"images:{images}", "--max-fps", "20", "--emit", "change",
                  "--mqtt-status-interval", "0.5", *extra, env=env)


def test_discovery_state_results_availability_and_last_will(bundle, images, broker, tmp_path):
    subscriber = Subscriber(broker)
    daemon = run_daemon(bundle, images, "--mqtt", broker.url)
    try:
        status = daemon.wait_status(lambda s: s["outputs"].get("mqtt", {}).get("connected") and s["frames"] > 60)
        assert status["outputs"]["mqtt"]["topic"] == TOPIC and status["outputs"]["mqtt"]["errors"] == 0
        configs = {topic: json.loads(payload) for topic, payload, _ in subscriber.messages
                   if topic.startswith("homeassistant/") and topic.endswith("/config")}
        kinds = sorted(topic.split("/")[1] + ":" + topic.split("/")[3] for topic in configs)
        assert kinds == ["binary_sensor:paper", "binary_sensor:rock", "binary_sensor:scissors",
                         "sensor:confidence", "sensor:label"]
        for config in configs.values():
            assert config["availability_topic"] == f"{TOPIC}/availability"
            assert config["device"]["name"] == "edgecam tiny" and config["device"]["manufacturer"] == "edgecam"
            assert config["device"]["sw_version"] and config["device"]["identifiers"]
            assert "int8" in config["device"]["model"]
        paper = next(c for t, c in configs.items() if t.endswith("/paper/config"))
        assert paper["name"] == "Sees paper" and paper["state_topic"] == f"{TOPIC}/state"
        assert '"paper"' in paper["value_template"] and paper["payload_on"] == "ON"
        confidence = next(c for t, c in configs.items() if t.endswith("/confidence/config"))
        assert confidence["state_topic"] == f"{TOPIC}/result" and "value_json.confidence" in confidence["value_template"]
        assert len({c["unique_id"] for c in configs.values()}) == 5

        assert subscriber.on(f"{TOPIC}/availability")[-1][0] == "online"
        results = [json.loads(p) for p, _ in subscriber.on(f"{TOPIC}/result")]
        assert len(results) >= 3 and {r["label"] for r in results} >= {"paper", "rock", "scissors"}
        assert all(a["label"] != b["label"] for a, b in zip(results, results[1:]))  # label changes only
        assert subscriber.wait(f"{TOPIC}/status", lambda p: json.loads(p)["outputs"]["mqtt"]["connected"])

        late = Subscriber(broker)  # a newcomer gets the retained state, availability and discovery at once
        assert wait_for(lambda: late.on(f"{TOPIC}/state"), 5)[0][1] is True
        assert late.on(f"{TOPIC}/state")[0][0] in {"paper", "rock", "scissors", "unknown"}
        assert wait_for(lambda: len([m for m in late.messages if m[0].endswith("/config") and m[2]]) == 5, 5)
        late.close()

        daemon.kill()  # kill -9: no goodbye, the broker sends the last will
        assert subscriber.wait(f"{TOPIC}/availability", lambda p: p == "offline", 10)
    finally:
        daemon.kill()
        subscriber.close()

    # --ha-remove: empty retained configs make Home Assistant delete the entities
    import subprocess
    import sys

    from outputs_helpers import REPO
    removed = subprocess.run([sys.executable, "-m", "device", "--bundle", str(bundle), "--mqtt", broker.url,
                              "--ha-remove"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert removed.returncode == 0, removed.stderr
    assert "removed 5 Home Assistant entities" in removed.stdout
    after = Subscriber(broker)
    time.sleep(1.0)
    assert not [m for m in after.messages if m[0].endswith("/config") or m[0].startswith(TOPIC)]
    after.close()


def test_reconnects_after_a_broker_restart_and_the_offline_queue_drops_oldest(bundle, images, broker):
    daemon = run_daemon(bundle, images, "--mqtt", broker.url, "--mqtt-emit", "every", "--mqtt-queue", "5",
                        "--no-ha-discovery")
    try:
        daemon.wait_status(lambda s: s["outputs"]["mqtt"]["connected"] and s["outputs"]["mqtt"]["written"] > 5)
        broker.stop()
        away = daemon.wait_status(lambda s: not s["outputs"]["mqtt"]["connected"])
        during = daemon.wait_status(lambda s: s["outputs"]["mqtt"]["dropped"] >= 10 and
                                    s["frames"] > away["frames"] + 10)  # inference goes on without the broker
        assert during["outputs"]["mqtt"]["queued"] == 5 and during["state"] == "running"
        assert "lost the broker" in during["outputs"]["mqtt"]["last_error"]
        broker.start()
        subscriber = Subscriber(broker)
        back = daemon.wait_status(lambda s: s["outputs"]["mqtt"]["connected"] and s["outputs"]["mqtt"]["connects"] >= 2,
                                  timeout=40)
        assert subscriber.wait(f"{TOPIC}/result", timeout=10)
        assert subscriber.wait(f"{TOPIC}/availability", lambda p: p == "online", 5)
        assert back["frames"] > during["frames"] and back["outputs"]["mqtt"]["state"] == "ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        dropped = next(line for line in metrics.splitlines() if line.startswith('edgecam_output_dropped_total{output="mqtt"}'))
        assert int(dropped.split()[-1]) >= 10
        subscriber.close()
        assert daemon.terminate() == 0
        assert "Traceback" not in "".join(daemon.stderr)
    finally:
        daemon.kill()


def test_password_and_tls_on_a_self_made_ca(bundle, images, tmp_path):
    need_mosquitto()
    tls = make_ca(tmp_path / "ca")
    broker = Broker(tmp_path / "broker", users={"camera": "s3cret pass"}, tls=tls)
    url = f"mqtts://127.0.0.1:{broker.port}"
    credentials = tmp_path / "mqtt-credentials"
    credentials.write_text("camera:s3cret pass\n")
    subscriber = Subscriber(broker, credentials=("camera", "s3cret pass"), ca=tls["ca"])
    daemon = run_daemon(bundle, images, "--mqtt", url, "--mqtt-ca", tls["ca"], "--mqtt-credentials", credentials)
    try:
        assert subscriber.wait(f"{TOPIC}/result", timeout=30), "".join(daemon.stderr)
        assert daemon.status()["outputs"]["mqtt"]["tls"] is True
        assert daemon.terminate() == 0
        assert subscriber.wait(f"{TOPIC}/availability", lambda p: p == "offline", 5)  # said goodbye
        assert "s3cret" not in "".join(daemon.stderr + daemon.stdout)
    finally:
        daemon.kill()
        subscriber.close()

    # the wrong password: a clear error and exit 2 at start, not a retry loop
    wrong = run_daemon(bundle, images, "--mqtt", url, "--mqtt-ca", tls["ca"],
                       env={"EDGECAM_MQTT_USERNAME": "camera", "EDGECAM_MQTT_PASSWORD": "nope"})
    assert wrong.process.wait(timeout=60) == 2
    message = "".join(wrong.stderr)
    assert "refused the connection" in message and "--mqtt-credentials FILE" in message, message
    assert "nope" not in message
    # credentials in the URL are refused with the way to pass them
    inline = run_daemon(bundle, images, "--mqtt", f"mqtts://camera:nope@127.0.0.1:{broker.port}")
    assert inline.process.wait(timeout=60) == 2
    assert "do not put credentials in the URL" in "".join(inline.stderr)
    broker.stop()


class SilentBroker:
    """Accepts MQTT connections, answers CONNECT with CONNACK, then never reads again (a tiny receive
    buffer), so the client's socket fills and blocks: the worst a broker can do to a publisher."""

    def __init__(self):
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(4)
        self.port = self.server.getsockname()[1]
        self.connections = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            connection.recv(256)  # the CONNECT packet
            connection.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted
            self.connections.append(connection)

    def close(self):
        self.server.close()
        for connection in self.connections:
            connection.close()


def fps_between(results: list, start: float, end: float) -> float:
    return len([r for r in results if start <= r["time"] < end]) / (end - start)


def test_a_broker_that_never_reads_leaves_inference_fps_unchanged(bundle, images):
    """Side by side, at the same time: one daemon without MQTT, one publishing every result to a broker
    that never reads. Frame rates capped at 40 fps so the comparison measures blocking, not CPU luck."""
    silent = SilentBroker()
    common = ("--bundle", bundle, "--source", f"images:{images}", "--max-fps", "40", "--emit", "every")
    plain = Daemon(*common)
    blocked = Daemon(*common, "--mqtt", f"mqtt://127.0.0.1:{silent.port}", "--mqtt-emit", "every",
                     "--mqtt-status-interval", "0", "--mqtt-queue", "20")
    try:
        for daemon in (plain, blocked):
            daemon.wait_status(lambda s: s["frames"] > 20)
        start = time.time() + 0.5
        stuck = blocked.wait_status(lambda s: s["outputs"]["mqtt"]["dropped"] > 0, timeout=30)
        end = max(time.time(), start + 3.0)
        time.sleep(max(0.0, end - time.time()) + 0.3)
        assert stuck["outputs"]["mqtt"]["connected"] is True  # the broker accepted; its socket is full
        ratio = fps_between(blocked.results(), start, end) / fps_between(plain.results(), start, end)
        assert 0.9 <= ratio <= 1.1, ratio
    finally:
        plain.kill()
        blocked.kill()
        silent.close()
