"""MQTT output against a real Mosquitto broker (loopback, free port) and a real paho subscriber: Home
Assistant discovery (one device per camera, diagnostics, configs that follow the labels), one retained
JSON state, availability of the process (last will, kill -9) and of the pipeline (a lost camera), results
on label change, a wildcard topic refused, paho's thread and the worker sharing the in-flight list,
reconnect after a broker restart with inference going on, a full offline queue, passwords and TLS on a
CA made here, and a broker that accepts but never reads leaving inference fps unchanged.

Skips (naming scripts/system-deps.sh) where mosquitto is not installed."""

import collections
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import device_bundle
import pytest
from conftest import copy_bundle
from outputs_helpers import REPO, Broker, Daemon, Subscriber, make_ca, need_mosquitto, wait_for

pytestmark = pytest.mark.timeout(120)
TOPIC = f"edgecam/{socket.gethostname().split('.')[0].lower()}/tiny"  # the default: host name and bundle name


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


def configs_of(messages: list) -> dict:
    """The newest retained discovery config per topic (an empty payload: removed)."""
    found = {}
    for topic, payload, _ in messages:
        if topic.startswith("homeassistant/") and topic.endswith("/config"):
            found[topic] = json.loads(payload) if payload else None
    return {topic: config for topic, config in found.items() if config is not None}


def entity(configs: dict, key: str) -> dict:
    return next(config for topic, config in configs.items() if topic.endswith(f"/{key}/config"))


def test_discovery_state_results_availability_and_last_will(bundle, images, broker, tmp_path):
    subscriber = Subscriber(broker)
    daemon = run_daemon(bundle, images, "--mqtt", broker.url, "--name", "Kitchen camera",
                        "--mqtt-state-interval", "0.1")
    try:
        status = daemon.wait_status(lambda s: s["outputs"].get("mqtt", {}).get("connected") and s["frames"] > 60)
        assert status["outputs"]["mqtt"]["topic"] == TOPIC and status["outputs"]["mqtt"]["errors"] == 0
        assert status["outputs"]["mqtt"]["working"] is True
        configs = configs_of(subscriber.messages)
        kinds = sorted(topic.split("/")[1] + ":" + topic.split("/")[3] for topic in configs)
        assert kinds == ["binary_sensor:needs_teaching", "binary_sensor:paper", "binary_sensor:problem",
                         "binary_sensor:rock", "binary_sensor:scissors", "sensor:camera", "sensor:confidence",
                         "sensor:error", "sensor:fps", "sensor:head", "sensor:label", "sensor:model",
                         "sensor:scene_match"]
        for topic, config in configs.items():
            device = config["device"]
            assert device["name"] == "Kitchen camera" and device["manufacturer"] == "edgecam"
            assert device["sw_version"] and device["identifiers"] and "int8" in device["model"]
            assert "configuration_url" not in device  # HTTP on loopback: no other machine could open it
            assert config["origin"]["name"] == "edgecam" and config["origin"]["sw_version"]
            assert config.get("icon", "").startswith("mdi:") or config.get("device_class") == "problem", topic
        working = [{"topic": f"{TOPIC}/availability"}, {"topic": f"{TOPIC}/health"}]
        for key in ("label", "confidence", "paper", "rock", "scissors"):
            assert entity(configs, key)["availability"] == working, key
            assert entity(configs, key)["availability_mode"] == "all"
            assert entity(configs, key)["state_topic"] == f"{TOPIC}/state"
        for key in ("fps", "camera", "model", "head", "error", "problem"):  # say what is wrong while it is
            assert entity(configs, key)["availability"] == [{"topic": f"{TOPIC}/availability"}], key
            assert entity(configs, key)["entity_category"] == "diagnostic"
        label = entity(configs, "label")
        assert label["device_class"] == "enum" and label["options"] == ["paper", "rock", "scissors", "uncertain"]
        assert "'unknown'" in label["value_template"] and '"uncertain"' in label["value_template"]
        paper = entity(configs, "paper")
        assert paper["name"] == "Sees paper" and '"paper"' in paper["value_template"]
        assert entity(configs, "problem")["device_class"] == "problem"
        assert len({c["unique_id"] for c in configs.values()}) == 13

        assert subscriber.on(f"{TOPIC}/availability")[-1][0] == "online"
        assert subscriber.on(f"{TOPIC}/health")[-1][0] == "online"
        results = [json.loads(p) for p, _ in subscriber.on(f"{TOPIC}/result")]
        assert len(results) >= 3 and {r["label"] for r in results} >= {"paper", "rock", "scissors"}
        assert all(a["label"] != b["label"] for a, b in zip(results, results[1:]))  # label changes only
        # one retained state with label and confidence, refreshed while the label stays
        states = [json.loads(p) for p, retained in subscriber.on(f"{TOPIC}/state")]
        assert all(set(state) == {"label", "confidence"} for state in states)
        assert len(states) > len(results) + 3  # the confidence is refreshed between label changes
        status = json.loads(subscriber.wait(f"{TOPIC}/status")[-1])
        assert status["outputs"]["mqtt"]["connected"] and status["model"]["sha256"] and status["problem"] is None

        late = Subscriber(broker)  # a newcomer (HA after a restart) gets state, health and discovery at once
        assert wait_for(lambda: late.on(f"{TOPIC}/state"), 5)[0][1] is True
        state = json.loads(late.on(f"{TOPIC}/state")[0][0])
        assert state["label"] in {"paper", "rock", "scissors", "unknown"} and 0 < state["confidence"] <= 1
        assert wait_for(lambda: late.on(f"{TOPIC}/health"), 5)[0] == ("online", True)
        assert wait_for(lambda: len([m for m in late.messages if m[0].endswith("/config") and m[2]]) == 13, 5)
        late.close()

        daemon.kill()  # kill -9: no goodbye, the broker sends the last will
        assert subscriber.wait(f"{TOPIC}/availability", lambda p: p == "offline", 10)
    finally:
        daemon.kill()
        subscriber.close()

    # --ha-remove: empty retained configs make Home Assistant delete the entities
    removed = subprocess.run([sys.executable, "-m", "device", "--bundle", str(bundle), "--mqtt", broker.url,
                              "--name", "Kitchen camera", "--ha-remove"], cwd=REPO, capture_output=True, text=True,
                             timeout=60)
    assert removed.returncode == 0, removed.stderr
    assert "removed 13 Home Assistant entities of 'Kitchen camera'" in removed.stdout
    after = Subscriber(broker)
    assert after.settle()
    assert not [m for m in after.messages if m[0].endswith("/config") or m[0].startswith(TOPIC)]
    after.close()


def test_a_lost_camera_makes_the_entities_unavailable_until_it_is_back(bundle, images, broker, tmp_path):
    frames = tmp_path / "camera"
    shutil.copytree(images, frames)
    subscriber = Subscriber(broker)
    daemon = run_daemon(bundle, frames, "--mqtt", broker.url)
    try:
        assert subscriber.wait(f"{TOPIC}/health", lambda p: p == "online", 30), "".join(daemon.stderr)
        unplugged = frames.with_name("camera-unplugged")
        frames.rename(unplugged)  # as good as pulling the camera's cable
        assert subscriber.wait(f"{TOPIC}/health", lambda p: p == "offline", 10)
        assert subscriber.on(f"{TOPIC}/availability")[-1][0] == "online"  # the process is fine
        problem = subscriber.wait(f"{TOPIC}/status", lambda p: json.loads(p)["problem"], 5)
        status = json.loads(problem[-1])
        assert status["source"]["state"] == "degraded" and status["problem"] == status["source"]["error"]
        unplugged.rename(frames)
        count = len(subscriber.on(f"{TOPIC}/health"))
        assert wait_for(lambda: subscriber.on(f"{TOPIC}/health")[count:], 15)  # the daemon retries with back-off
        assert subscriber.on(f"{TOPIC}/health")[-1][0] == "online"
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
        subscriber.close()


def test_two_cameras_on_one_bundle_are_two_devices(bundle, images, broker, monkeypatch):
    subscriber = Subscriber(broker)
    kitchen = run_daemon(bundle, images, "--mqtt", broker.url, "--mqtt-topic", "edgecam/kitchen")
    door = run_daemon(bundle, images, "--mqtt", broker.url, "--mqtt-topic", "home/door")
    try:
        for daemon in (kitchen, door):
            daemon.wait_status(lambda s: s["outputs"]["mqtt"]["connected"] and s["frames"] > 5)
        configs = configs_of(subscriber.messages)
        devices = {c["device"]["identifiers"][0]: c["device"]["name"] for c in configs.values()}
        host = socket.gethostname().split(".")[0]
        assert sorted(devices.values()) == [f"{host} door", f"{host} kitchen"]
        labels = [c for t, c in configs.items() if t.endswith("/label/config")]
        assert sorted(c["state_topic"] for c in labels) == ["edgecam/kitchen/state", "home/door/state"]
    finally:
        kitchen.kill()
        door.kill()
        subscriber.close()


def test_discovery_follows_the_labels_on_reload_without_a_restart(bundle, images, broker, tmp_path):
    """A new release with other classes (here: one class renamed), then SIGHUP: the new class gets its
    config, the gone class's retained config is emptied, and the label sensor's options follow."""
    copy = copy_bundle(bundle, tmp_path / "bundle")
    subscriber = Subscriber(broker)
    daemon = run_daemon(copy, images, "--mqtt", broker.url)
    try:
        daemon.wait_status(lambda s: s["outputs"]["mqtt"]["connected"] and s["frames"] > 5)
        assert entity(configs_of(subscriber.messages), "paper")
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["labels"] = ["sheet" if label == "paper" else label for label in manifest["labels"]]
        (copy / "manifest.json").write_text(json.dumps(manifest))
        (copy / "labels.txt").write_text("\n".join(manifest["labels"]) + "\n")
        daemon.process.send_signal(signal.SIGHUP)
        assert subscriber.wait("homeassistant/binary_sensor/" + node(subscriber) + "/sheet/config", timeout=15), \
            "".join(daemon.stderr)
        assert subscriber.wait("homeassistant/binary_sensor/" + node(subscriber) + "/paper/config",
                               lambda p: p == "", 5)
        late = Subscriber(broker)  # what Home Assistant finds when it starts now
        assert late.settle()
        configs = configs_of(late.messages)
        late.close()
        assert sorted(t.split("/")[3] for t in configs if "/binary_sensor/" in t) == [
            "needs_teaching", "problem", "rock", "scissors", "sheet"]
        assert entity(configs, "label")["options"] == ["sheet", "rock", "scissors", "uncertain"]
        assert daemon.status()["model"]["labels"] == ["sheet", "rock", "scissors"]
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
        subscriber.close()


def node(subscriber: Subscriber) -> str:
    return next(t.split("/")[2] for t, _, _ in subscriber.messages if t.endswith("/label/config"))


def test_a_wildcard_topic_disables_mqtt_at_start(bundle, images, broker):
    """It used to start, say MQTT ok in /status, and drop every result; then it exited 2 (the camera down).
    Now MQTT is disabled with the reason and the camera serves."""
    for topic in ("edgecam/#", "edgecam/a\nb"):
        started = run_daemon(bundle, images, "--mqtt", broker.url, "--mqtt-topic", topic)
        try:
            mqtt = started.wait_status(lambda s: s["frames"] > 2, timeout=60)["outputs"]["mqtt"]
            assert mqtt["state"] == "disabled", topic
            assert "--mqtt-topic" in mqtt["reason"] and "e.g. edgecam/kitchen" in mqtt["reason"]
            assert "--mqtt-topic" in "".join(started.stderr)
            assert started.terminate() == 0
        finally:
            started.kill()


def test_paho_clearing_its_session_while_the_worker_reads_pending(broker):
    """paho's network thread (on_disconnect) used to clear `pending` while the worker popped from it: the
    IndexError turned MQTT off for good. Deterministic: the moment the worker looks at the oldest message
    in flight, the real on_disconnect callback runs with the real client from another thread."""
    from device.outputs import OutputContext
    from device.outputs.mqtt import MqttOutput
    from device.outputs.settings import OutputSettings

    output = MqttOutput(OutputSettings(mqtt=broker.url, mqtt_topic="edgecam/race", mqtt_qos=1,
                                       ha_discovery=False, mqtt_status_interval=0))
    output.open(OutputContext(name="race", labels=["a", "b"]))
    subscriber = Subscriber(broker)
    try:
        assert output.connected.wait(5)
        output.publish("edgecam/race/first", "1")
        output.pending[0].wait_for_publish(5)
        fired = []

        class Racing(collections.deque):
            def __getitem__(self, index):
                item = super().__getitem__(index)
                if not fired:
                    fired.append(True)
                    network = threading.Thread(target=output.on_disconnect,
                                               args=(output.client, None, None, "connection lost"))
                    network.start()
                    network.join()
                return item

        output.pending = Racing(output.pending)
        output.publish("edgecam/race/second", "2")  # used to raise IndexError: pop from an empty deque
        assert fired and subscriber.wait("edgecam/race/second", timeout=5)
    finally:
        output.close()
        subscriber.close()


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

    # the wrong password: a clear error at start, not a retry loop; MQTT is disabled, the camera serves
    wrong = run_daemon(bundle, images, "--mqtt", url, "--mqtt-ca", tls["ca"],
                       env={"EDGECAM_MQTT_USERNAME": "camera", "EDGECAM_MQTT_PASSWORD": "nope"})
    try:
        status = wrong.wait_status(lambda s: s["frames"] > 2, timeout=60)
        reason = status["outputs"]["mqtt"]["reason"]
        assert status["outputs"]["mqtt"]["state"] == "disabled"
        assert "refused the connection" in reason and "--mqtt-credentials FILE" in reason, reason
        assert "nope" not in "".join(wrong.stderr) + json.dumps(status)
        assert wrong.terminate() == 0
    finally:
        wrong.kill()
    # credentials in the URL are refused with the way to pass them
    inline = run_daemon(bundle, images, "--mqtt", f"mqtts://camera:nope@127.0.0.1:{broker.port}")
    try:
        status = inline.wait_status(lambda s: s["frames"] > 2, timeout=60)
        assert "do not put credentials in the URL" in status["outputs"]["mqtt"]["reason"]
        assert "nope" not in "".join(inline.stderr)
    finally:
        inline.kill()
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


def test_a_stalled_pipeline_turns_health_off_and_a_frame_turns_it_back_on(broker, monkeypatch):
    """A hung invoke or a model whose every frame fails: the daemon says healthy (the camera delivers) but no
    frame reaches the outputs. The MQTT output notices within its stall time (shortened here)."""
    from device.outputs import OutputContext, open_outputs
    from device.outputs import mqtt as module
    from device.outputs.settings import OutputSettings

    monkeypatch.setattr(module, "STALL_S", 1.0)
    subscriber = Subscriber(broker)
    output = module.MqttOutput(OutputSettings(mqtt=broker.url, mqtt_topic="edgecam/stall", mqtt_status_interval=0))
    status = {"state": "running", "source": {"state": "ok", "error": None}}
    outputs = open_outputs([output], OutputContext(name="stall", labels=["a", "b"], status=lambda: dict(status),
                                                   health=lambda: (True, None)))
    try:
        assert subscriber.wait("edgecam/stall/health", lambda p: p == "offline", 5)  # no frame yet
        outputs.result({"frame": 1, "label": "a", "confidence": 0.9})
        assert subscriber.wait("edgecam/stall/health", lambda p: p == "online", 5)
        started = time.monotonic()
        stalled = subscriber.wait("edgecam/stall/status", lambda p: (json.loads(p)["problem"] or "").startswith(
            "no frame classified"), 10)
        assert stalled and 1.0 <= time.monotonic() - started < 5
        assert subscriber.on("edgecam/stall/health")[-1][0] == "offline"
        outputs.result({"frame": 2, "label": "a", "confidence": 0.9})
        count = len(subscriber.on("edgecam/stall/health"))
        assert wait_for(lambda: subscriber.on("edgecam/stall/health")[count:], 5)
        assert subscriber.on("edgecam/stall/health")[-1][0] == "online"
    finally:
        outputs.close()
        subscriber.close()
