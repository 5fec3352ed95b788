"""Home Assistant ids unique for any label and topic (issue 26 item 11), against a real Mosquitto broker and
real paho clients (tests/outputs_helpers.py): non-ASCII labels, labels that slug alike, a class named
``problem``, two topics that slug alike (node ids and MQTT client ids), retained configs of vanished classes
emptied on connect, the labels message never lost to the drop-oldest result queue, and the ids existing
users have kept where the label and topic are plain."""

import json

import pytest
from outputs_helpers import Broker, Subscriber, need_mosquitto, wait_for

from device.outputs import OutputContext, homeassistant, mqtt, open_outputs
from device.outputs.settings import OutputSettings

pytestmark = pytest.mark.timeout(60)
MACHINE = "0123456789ab"
LABELS = ["кошка", "собака", "猫", "a/b", "a b", "problem", "paper", "rock_2"]


@pytest.fixture()
def broker(tmp_path):
    need_mosquitto()
    broker = Broker(tmp_path / "broker")
    yield broker
    broker.stop()


def sees(configs: dict) -> dict:
    """{label: config} of the "Sees <label>" binary sensors."""
    return {config["name"][len("Sees "):]: config for config in configs.values() if config["name"].startswith("Sees ")}


def test_every_label_gets_its_own_entity_and_the_problem_sensor_stays():
    configs = homeassistant.discovery("homeassistant", "edgecam/kitchen", "kitchen", LABELS, MACHINE)
    assert sorted(sees(configs)) == sorted(LABELS)  # 8 labels, 8 entities (кошка, собака, 猫 were one)
    assert len({config["unique_id"] for config in configs.values()}) == len(configs) == 10 + len(LABELS)  # 10: label, confidence, 6 diagnostics, problem, needs teaching
    problem = configs[f"homeassistant/binary_sensor/edgecam_{MACHINE}_edgecam_kitchen/problem/config"]
    assert problem["name"] == "Problem" and problem["device_class"] == "problem"
    # the ids users have today stay where label and topic are plain ASCII and unambiguous
    node = f"edgecam_{MACHINE}_edgecam_kitchen"
    for label in ("paper", "rock_2"):
        assert sees(configs)[label]["unique_id"] == f"{node}_{label}"
        assert f"homeassistant/binary_sensor/{node}/{label}/config" in configs
    assert sees(configs)["a b"]["unique_id"] != sees(configs)["a/b"]["unique_id"]


def test_colliding_ids_are_refused_with_a_clear_message():
    taken = homeassistant.label_key("a b")  # a class named like another label's hashed id
    with pytest.raises(ValueError, match="rename one of the classes"):
        homeassistant.discovery("homeassistant", "edgecam/kitchen", "kitchen", ["a b", taken], MACHINE)
    # at start, before any connection (the daemon turns the MQTT output off with this line; the camera serves)
    output = mqtt.MqttOutput(OutputSettings(mqtt="mqtt://127.0.0.1:9", mqtt_topic="edgecam/kitchen"))
    with pytest.raises(ValueError, match=f"the labels 'a b' and '{taken}' give the same Home Assistant id"):
        output.open(OutputContext(name="k", labels=["a b", taken], status=dict, health=lambda: (True, None)))
    assert output.client is None


def test_topics_that_slug_alike_get_their_own_node_and_client_ids(broker):
    assert homeassistant.node_id("edgecam/kitchen", MACHINE) == f"edgecam_{MACHINE}_edgecam_kitchen"  # as before
    assert homeassistant.node_id("home/door", MACHINE) == f"edgecam_{MACHINE}_home_door"
    assert homeassistant.node_id("edgecam/rps_v2", MACHINE) == f"edgecam_{MACHINE}_edgecam_rps_v2"
    topics = ["edgecam/kitchen", "edgecam_kitchen"]
    assert len({homeassistant.node_id(topic, MACHINE) for topic in topics}) == 2
    subscriber = Subscriber(broker)
    opened = []
    try:
        for topic in topics:
            output = mqtt.MqttOutput(OutputSettings(mqtt=broker.url, mqtt_topic=topic, mqtt_status_interval=0))
            opened.append(open_outputs([output], OutputContext(name="k", labels=["a", "b"], status=dict,
                                                               health=lambda: (True, None))))
        first, second = (outputs.channels[0].output for outputs in opened)
        assert wait_for(lambda: first.connected.is_set() and second.connected.is_set(), 10)
        # the broker drops a client whose id a newer one takes: the first would reconnect, and so on
        assert not wait_for(lambda: first.connects + second.connects > 2, 3)
        assert wait_for(lambda: len({topic.split("/")[2] for topic, _, _ in subscriber.messages
                                     if topic.endswith("/label/config")}) == 2, 5)
    finally:
        for outputs in opened:
            outputs.close()
        subscriber.close()
    # --ha-remove of one camera leaves the other's entities alone
    settings = OutputSettings(mqtt=broker.url, mqtt_topic="edgecam_kitchen")
    assert mqtt.remove_home_assistant(settings, "k", ["a", "b"]) == 0
    late = Subscriber(broker)
    assert late.settle()
    kept = {topic.split("/")[2] for topic, payload, _ in late.messages if topic.endswith("/config") and payload}
    late.close()
    assert kept == {homeassistant.node_id("edgecam/kitchen", mqtt.machine_id())}


def test_retained_configs_the_daemon_does_not_know_are_emptied_on_connect(broker):
    node = homeassistant.node_id("edgecam/ghosts", mqtt.machine_id())
    ghost = f"homeassistant/binary_sensor/{node}/ghost/config"
    publisher = Subscriber(broker)
    publisher.client.publish(ghost, json.dumps({"name": "Sees ghost"}), qos=1, retain=True).wait_for_publish(5)
    other = "homeassistant/binary_sensor/someone_else/ghost/config"  # not ours: left alone
    publisher.client.publish(other, json.dumps({"name": "x"}), qos=1, retain=True).wait_for_publish(5)
    output = mqtt.MqttOutput(OutputSettings(mqtt=broker.url, mqtt_topic="edgecam/ghosts", mqtt_status_interval=0))
    outputs = open_outputs([output], OutputContext(name="g", labels=["a"], status=dict, health=lambda: (True, None)))
    try:
        assert publisher.wait(ghost, lambda payload: payload == "", 10)
        late = Subscriber(broker)  # what Home Assistant finds when it starts now
        assert wait_for(lambda: late.on(other), 5)
        assert not late.on(ghost) and wait_for(lambda: late.on(f"homeassistant/binary_sensor/{node}/a/config"), 5)
        late.close()
    finally:
        outputs.close()
        publisher.close()


def test_the_labels_message_is_never_dropped_for_results(broker):
    """The broker is down while a taught head's labels and many results queue up (a queue of 4)."""
    broker.stop()
    subscriber_topic = f"homeassistant/binary_sensor/{homeassistant.node_id('edgecam/queue', mqtt.machine_id())}"
    output = mqtt.MqttOutput(OutputSettings(mqtt=broker.url, mqtt_topic="edgecam/queue", mqtt_queue=4,
                                            mqtt_status_interval=0))
    outputs = open_outputs([output], OutputContext(name="q", labels=["a"], status=dict, health=lambda: (True, None)))
    try:
        outputs.result({"frame": 0, "label": "a", "confidence": 0.9})
        outputs.labels(["a", "taught"])
        for frame in range(1, 20):
            outputs.result({"frame": frame, "label": "a" if frame % 2 else "taught", "confidence": 0.9})
        broker.start()
        subscriber = Subscriber(broker)
        try:
            assert subscriber.wait(f"{subscriber_topic}/taught/config", timeout=15)
        finally:
            subscriber.close()
    finally:
        outputs.close()


@pytest.mark.slow
@pytest.mark.timeout(900)  # the first run installs Home Assistant (tests/home_assistant.py)
def test_home_assistant_makes_an_entity_per_label_and_keeps_the_problem_sensor(tmp_path):
    """The real Home Assistant core on the real broker: what it makes of these labels' configs."""
    from home_assistant import HomeAssistant

    broker = Broker(tmp_path / "broker")
    home = HomeAssistant(tmp_path / "ha", broker.port)
    output = mqtt.MqttOutput(OutputSettings(mqtt=broker.url, mqtt_topic="edgecam/ids", name="Ids camera",
                                            mqtt_status_interval=0))
    outputs = open_outputs([output], OutputContext(name="ids", labels=LABELS, status=dict,
                                                   health=lambda: (True, None)))
    try:
        problem = "binary_sensor.ids_camera_problem"
        assert wait_for(lambda: home.state(problem), 60), home.tail()
        device = home.template("{{ device_id('%s') }}" % problem)

        def entities():
            found = home.template("{{ device_entities('%s') | join(' ') }}" % device).split()
            return found if len(found) == 10 + len(LABELS) else None
        found = wait_for(entities, 30)
        assert found, home.template("{{ device_entities('%s') | join(' ') }}" % device)
        names = {home.state(entity)["attributes"]["friendly_name"] for entity in found}
        assert {f"Ids camera Sees {label}" for label in LABELS} <= names and "Ids camera Problem" in names
        assert home.state(problem)["attributes"]["device_class"] == "problem"
        assert home.errors() == []
    finally:
        outputs.close()
        home.stop()
        broker.stop()
