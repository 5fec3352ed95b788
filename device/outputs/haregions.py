"""Regions over MQTT and in Home Assistant (issue 27): the camera stays one device; each region adds its own
label sensor and confidence sensor, read from its own retained state topic.

    <topic>/region/<NAME>/state     {"label": ..., "confidence": ...}, retained, on each change of that region
    sensor "<NAME> label"           enum: the region's own labels (its taught head's, or the bundle's), or UNSURE
    sensor "<NAME> confidence"      % of the region's smoothed top class

Ids: ``<node>_region_<NAME>_label`` / ``_confidence`` (a region name is letters, digits, '-' and '_', so the id
is unique for any name, and never one of the camera's own entity ids). A renamed or removed region's configs
and state are emptied, so Home Assistant drops its entities. Pure functions, plus the MQTT output's hooks.
"""

from __future__ import annotations

import json

from device.outputs.base import to_json
from device.outputs.homeassistant import discovery, from_json, slug, unsure_value


def state_topic(topic: str, name: str) -> str:
    return f"{topic}/region/{name}/state"


def configs(prefix: str, topic: str, device_name: str, regions: list, machine: str, model: str = "",
            url: str | None = None) -> dict:
    """{config topic: payload} for every region's entities (REGIONS: [{"name", "labels"}]), on the camera's
    own device (the same device block and availability as the camera's readings)."""
    if not regions:
        return {}
    camera = discovery(prefix, topic, device_name, [], machine, model, url)
    reading = next(config for config in camera.values() if config.get("availability_mode") == "all")
    node = reading["device"]["identifiers"][0]
    common = {key: reading[key] for key in ("availability", "availability_mode", "device", "origin") if key in reading}
    found = {}
    for region in regions:
        name, labels = region["name"], list(region.get("labels") or [])
        unsure, state, key = unsure_value(labels), state_topic(topic, name), slug(f"region_{name}")
        found[f"{prefix}/sensor/{node}/{key}_label/config"] = {
            "name": f"{name} label", "unique_id": f"{node}_{key}_label", "state_topic": state,
            "value_template": from_json("%s if value_json.label == 'unknown' else value_json.label"
                                        % json.dumps(unsure)),
            "device_class": "enum", "options": [*labels, unsure], "icon": "mdi:eye", **common}
        found[f"{prefix}/sensor/{node}/{key}_confidence/config"] = {
            "name": f"{name} confidence", "unique_id": f"{node}_{key}_confidence", "state_topic": state,
            "value_template": from_json("(value_json.confidence * 100) | round(1)"), "unit_of_measurement": "%",
            "state_class": "measurement", "suggested_display_precision": 1, "icon": "mdi:percent", **common}
    return found


def payload(result: dict) -> str:
    return to_json({"label": result["label"], "confidence": round(float(result["confidence"]), 3)})


class RegionPublisher:
    """The MQTT output's region state: each region's retained state (republished on reconnect), and the
    discovery configs of the regions now served (a rename empties the old name's)."""

    def __init__(self):
        self.regions: list = []  # [{"name", "labels"}]
        self.states: dict = {}   # state topic -> its last payload
        self.labels: dict = {}   # region -> the label of its last <topic>/result

    def configs(self, output) -> dict:
        context = output.context
        return configs(output.settings.ha_discovery_prefix, output.topic, output.device_name, self.regions,
                       _machine(), context.model, output.url)

    def write_result(self, output, result: dict) -> None:
        name = result["region"]
        topic, state = state_topic(output.topic, name), payload(result)
        if self.states.get(topic) != state:
            output.publish(topic, state, retain=True)
            self.states[topic] = state
        if output.emitter.mode == "every" or result["label"] != self.labels.get(name):
            output.publish(f"{output.topic}/result", to_json(result))
            self.labels[name] = result["label"]

    def republish(self, client, qos: int) -> None:
        for topic, state in self.states.items():
            client.publish(topic, state, qos=qos, retain=True)

    def write_regions(self, output, regions: list) -> None:
        """The regions changed (a new box set, a rename, a taught head's labels): follow them."""
        regions = [{"name": entry["name"], "labels": list(entry.get("labels") or [])} for entry in regions]
        if regions == self.regions:
            return
        old, old_names = self.configs(output), {entry["name"] for entry in self.regions}
        self.regions = regions
        if output.settings.ha_discovery:
            new = self.configs(output)
            for topic, config in new.items():
                output.publish(topic, json.dumps(config), retain=True, qos=1)
            for topic in old:
                if topic not in new:
                    output.publish(topic, "", retain=True, qos=1)
        names = {entry["name"] for entry in regions}
        for name in sorted(old_names - names):
            topic = state_topic(output.topic, name)
            if self.states.pop(topic, None) is not None:
                output.publish(topic, "", retain=True, qos=1)


def _machine() -> str:
    from device.outputs.homeassistant import machine_id

    return machine_id()
