"""Home Assistant MQTT discovery: the configs that make one camera one device with its entities.

Everything here is pure: topics, names and labels in, {config topic: payload} out. The MQTT output
(device/outputs/mqtt.py) publishes them, retained.

The device is the camera, not the bundle: its identifier comes from this machine and the topic, its name
from ``--name`` (default: the host name and the topic's last part, "kitchenpi rps"), so two cameras that
run the same bundle are two devices with their own names. Entities:

    sensor Label              enum: the labels, or UNSURE when the daemon says "unknown"
    sensor Confidence         % of the smoothed top class
    binary_sensor Sees <x>    one per label: on while the label is x (ids: label_key)
    diagnostics               Frames a second, Camera, Model, Head revision, Last error, Problem

Label and confidence come from one retained JSON message (``<topic>/state``), so both are right at once
and after a restart of Home Assistant. The reading entities are available only while both the process
(``<topic>/availability``, with the last will) and the pipeline (``<topic>/health``: camera delivering,
model classifying) are; the diagnostics need only the process, so they can say what is wrong.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import socket
import unicodedata

from device import __version__

UNSURE = "uncertain"  # the label sensor's state for the daemon's "unknown": never HA's own "unknown"
ORIGIN = {"name": "edgecam", "sw_version": __version__}


def from_json(expression: str) -> str:
    """A value template that renders nothing for a payload that is not JSON (an emptied retained topic, e.g.
    while --ha-remove clears them): Home Assistant ignores empty output instead of logging a template error."""
    return "{% if value_json is defined %}{{ " + expression + " }}{% endif %}"


def slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]+", "_", text).strip("_") or "x"


# ---- ids: unique for any label and topic, and the same as before where that was unambiguous ------------
RESERVED = {"problem", "needs_teaching"}  # the diagnostics' binary sensors: a class of that name must not replace one
DEFAULT_TOPIC = re.compile(r"edgecam/[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*")  # default_topic()'s shape
PLAIN_TOPIC = re.compile(r"[A-Za-z0-9-]+(?:/[A-Za-z0-9-]+)*")


def digest(text: str, length: int = 6) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def readable(text: str) -> str:
    """An ASCII slug that keeps what it can of TEXT (café -> cafe; кошка -> x: the hash beside it tells apart)."""
    return slug(unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii"))


def label_key(label: str) -> str:
    """A label's part of its entity's config topic and unique_id: the label itself where slug() leaves it as
    it is (the ids of every release so far), else a readable slug and 6 hex digits of the label's sha256
    (`a b` -> a_b_<hash>, `кошка` -> x_<hash>, `problem` -> problem_<hash>)."""
    if slug(label) == label and label not in RESERVED:
        return label
    return f"{readable(label)}_{digest(label)}"


def topic_key(topic: str) -> str:
    """A topic's part of the node id: slug(topic) as before where no other topic slugs alike, i.e. the default
    ``edgecam/NAME`` (NAME of letters, digits, '-' and single '_') and topics of letters, digits and '-' levels
    (except deeper ones under ``edgecam/``); any other topic a readable slug, '__' and 8 hex digits of its
    sha256 (the plain ones never hold '__', so no two topics share a node id)."""
    plain = DEFAULT_TOPIC.fullmatch(topic) or (PLAIN_TOPIC.fullmatch(topic)
                                                 and not (topic.startswith("edgecam/") and topic.count("/") > 1))
    return slug(topic) if plain else f"{readable(topic)}__{digest(topic, 8)}"


def client_id(topic: str, machine: str) -> str:
    """The MQTT client id of the daemon publishing to TOPIC on this machine (the broker drops a client whose
    id a newer one takes, so two topics never share one): at most 64 characters."""
    return f"edgecam-{machine}-{readable(topic)[:30]}-{digest(topic, 8)}"


def machine_id() -> str:
    """A stable, non-reversible id of this machine (hashed /etc/machine-id, else the host name)."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path, encoding="ascii") as handle:
                text = handle.read().strip()
            if text:
                break
        except OSError:
            continue
    else:
        text = socket.gethostname()
    return hashlib.sha256(f"edgecam:{text}".encode()).hexdigest()[:12]


def default_name(topic: str, host: str | None = None) -> str:
    """The camera's name when --name is not given: the host name plus the topic's last part."""
    host = (host or socket.gethostname()).split(".")[0] or "edgecam"
    return f"{host} {topic.rstrip('/').rsplit('/', 1)[-1]}"


def unsure_value(labels: list) -> str:
    """UNSURE, or a variant of it when a class already has that name."""
    value = UNSURE
    while value in labels:
        value += "_reading"
    return value


def kiosk_url(http: str) -> str | None:
    """The kiosk's address for the device page (HA's ``configuration_url``), only when HTTP listens on an
    address other machines can reach and on a fixed port; a wildcard address becomes ``<host>.local``."""
    if not http or http == "off":
        return None
    host, _, port = http.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or int(port) == 0:
        return None
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
        host = host if "." in host else f"{host}.local"
    elif host == "localhost":
        return None
    else:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None and address.is_loopback:
            return None
        if address is not None and address.version == 6:
            host = f"[{host}]"
    return f"http://{host}:{port}/"


def node_id(topic: str, machine: str) -> str:
    return f"edgecam_{slug(machine)}_{topic_key(topic)}"


def discovery(prefix: str, topic: str, name: str, labels: list, machine: str, model: str = "",
              url: str | None = None) -> dict:
    """{config topic: payload dict} for every entity of this camera."""
    node = node_id(topic, machine)
    process = {"topic": f"{topic}/availability"}
    working = {"availability": [process, {"topic": f"{topic}/health"}], "availability_mode": "all"}
    diagnostic = {"availability": [process], "entity_category": "diagnostic"}
    device = {"identifiers": [node], "name": name, "manufacturer": "edgecam",
              "model": f"edgecam classifier{f' ({model})' if model else ''}", "sw_version": __version__}
    if url:
        device["configuration_url"] = url
    common = {"device": device, "origin": ORIGIN}
    unsure = unsure_value(labels)
    label_template = from_json("%s if value_json.label == 'unknown' else value_json.label" % json.dumps(unsure))
    sensor, binary = f"{prefix}/sensor/{node}", f"{prefix}/binary_sensor/{node}"
    configs = {
        f"{sensor}/label/config": {
            "name": "Label", "unique_id": f"{node}_label", "state_topic": f"{topic}/state",
            "value_template": label_template, "device_class": "enum", "options": [*labels, unsure],
            "icon": "mdi:eye", **working, **common},
        f"{sensor}/confidence/config": {
            "name": "Confidence", "unique_id": f"{node}_confidence", "state_topic": f"{topic}/state",
            "value_template": from_json("(value_json.confidence * 100) | round(1)"), "unit_of_measurement": "%",
            "state_class": "measurement", "suggested_display_precision": 1, "icon": "mdi:percent",
            **working, **common},
    }
    named: dict = {}
    for label in labels:
        key = label_key(label)
        if key in named:
            raise ValueError(f"the labels {named[key]!r} and {label!r} give the same Home Assistant "
                             f"id {key!r}: rename one of the classes (the Teach view, or python -m device dataset), "
                             "or start with --no-ha-discovery.")
        named[key] = label
        configs[f"{binary}/{key}/config"] = {
            "name": f"Sees {label}", "unique_id": f"{node}_{key}", "state_topic": f"{topic}/state",
            "value_template": from_json("'ON' if value_json.label == %s else 'OFF'" % json.dumps(label)),
            "payload_on": "ON", "payload_off": "OFF", "icon": "mdi:eye-check", **working, **common}
    status = f"{topic}/status"
    diagnostics = {
        "fps": {"name": "Frames a second", "state_topic": status, "value_template": from_json("value_json.fps"),
                "unit_of_measurement": "fps", "state_class": "measurement", "icon": "mdi:speedometer"},
        "camera": {"name": "Camera", "state_topic": status, "icon": "mdi:camera",
                   "value_template": from_json("value_json.source.state")},
        "model": {"name": "Model", "state_topic": status, "icon": "mdi:brain",
                  "value_template": from_json("value_json.model.sha256[:12] if value_json.model else 'none'")},
        "head": {"name": "Head revision", "state_topic": status, "icon": "mdi:source-branch",
                 "value_template": from_json("value_json.head.revision if value_json.head else 0")},
        "error": {"name": "Last error", "state_topic": status, "icon": "mdi:alert-circle-outline",
                  "value_template": from_json("(value_json.problem or value_json.errors or 'none') | truncate(250)")},
        "scene_match": {"name": "Scene match", "state_topic": status, "icon": "mdi:image-search",  # device/drift.py
                        "unit_of_measurement": "%", "state_class": "measurement",
                        "value_template": from_json("value_json.drift.match_percent if value_json.drift else none")},
    }
    for key, config in diagnostics.items():
        configs[f"{sensor}/{key}/config"] = {**config, "unique_id": f"{node}_{key}", **diagnostic, **common}
    configs[f"{binary}/problem/config"] = {
        "name": "Problem", "unique_id": f"{node}_problem", "state_topic": f"{topic}/health",
        "payload_on": "offline", "payload_off": "online", "device_class": "problem", **diagnostic, **common}
    configs[f"{binary}/needs_teaching/config"] = {
        "name": "Needs teaching", "unique_id": f"{node}_needs_teaching", "state_topic": status,
        "value_template": from_json("'ON' if value_json.drift and value_json.drift.state == 'drifted' else 'OFF'"),
        "payload_on": "ON", "payload_off": "OFF", "device_class": "problem", **diagnostic, **common}
    return configs
