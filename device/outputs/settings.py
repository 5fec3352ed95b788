"""Flags and settings of the network outputs (MQTT, webhook): one dataclass the daemon's Options carries,
and the argparse flags that fill it (device/cli.py calls ``add_arguments``)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass


@dataclass
class OutputSettings:
    mqtt: str | None = None                 # mqtt://host[:port] or mqtts://host[:port]
    mqtt_topic: str | None = None           # default edgecam/<host name>/<bundle name>
    mqtt_emit: str = "change"
    mqtt_qos: int = 0
    mqtt_ca: str | None = None
    mqtt_credentials: str | None = None     # a file holding USERNAME:PASSWORD
    mqtt_status_interval: float = 30.0
    mqtt_state_interval: float = 5.0
    name: str | None = None                 # the camera's name in Home Assistant; default: host + topic's last part
    mqtt_queue: int = 100
    ha_discovery: bool = True
    ha_discovery_prefix: str = "homeassistant"
    ha_remove: bool = False
    webhook: str | None = None
    webhook_emit: str = "change"
    webhook_timeout: float = 5.0
    webhook_retries: int = 3


ENVIRONMENT = {"mqtt": "EDGECAM_MQTT", "mqtt_topic": "EDGECAM_MQTT_TOPIC", "webhook": "EDGECAM_WEBHOOK",
               "name": "EDGECAM_NAME"}


def add_arguments(parser: argparse.ArgumentParser, positive_int, non_negative_float, environ=None) -> None:
    """The output flags. --mqtt, --mqtt-topic, --name and --webhook default to $EDGECAM_MQTT,
    $EDGECAM_MQTT_TOPIC, $EDGECAM_NAME and $EDGECAM_WEBHOOK, so /etc/default/edgecam can wire a Pi to a
    broker without editing the unit."""
    environ = os.environ if environ is None else environ
    default = {name: environ.get(variable) or None for name, variable in ENVIRONMENT.items()}
    group = parser.add_argument_group(
        "outputs: MQTT / Home Assistant and webhook",
        "MQTT credentials come from --mqtt-credentials FILE or $EDGECAM_MQTT_USERNAME and "
        "$EDGECAM_MQTT_PASSWORD, never from the command line.")
    add = group.add_argument
    add("--mqtt", default=default["mqtt"], metavar="URL",
        help="publish results to this MQTT broker: mqtt://HOST[:1883] or mqtts://HOST[:8883] (needs paho-mqtt: "
             "pip install 'edgecam[mqtt]'); default: $EDGECAM_MQTT")
    add("--mqtt-topic", default=default["mqtt_topic"],
        help="topic prefix (default: $EDGECAM_MQTT_TOPIC, else edgecam/<host name>/<bundle name>, so each "
             "camera on a broker has its own; before 2026-12 the default was edgecam/<bundle name>)")
    add("--name", default=default["name"],
        help="this camera's name in Home Assistant, which also makes its entity ids (default: $EDGECAM_NAME, "
             "else the host name and the topic's last part, e.g. 'kitchenpi rps')")
    add("--mqtt-emit", choices=("change", "every"), default="change",
        help="<topic>/result on label changes only, or every frame")
    add("--mqtt-qos", type=int, choices=(0, 1, 2), default=0, help="QoS of results and state")
    add("--mqtt-ca", default=None, metavar="FILE", help="CA certificate that signed the broker's (mqtts://)")
    add("--mqtt-credentials", default=None, metavar="FILE",
        help="file whose first line is USERNAME:PASSWORD (chmod 600)")
    add("--mqtt-status-interval", type=non_negative_float, default=30.0,
        help="seconds between <topic>/status messages (0: only on changes)")
    add("--mqtt-state-interval", type=non_negative_float, default=5.0,
        help="while the label stays, refresh <topic>/state's confidence at most this often (0: label changes only)")
    add("--mqtt-queue", type=positive_int, default=100,
        help="messages kept while the broker is away (the oldest are dropped beyond this, counted)")
    add("--ha-discovery", dest="ha_discovery", action="store_true", default=True,
        help="announce the camera to Home Assistant (MQTT discovery)")
    add("--no-ha-discovery", dest="ha_discovery", action="store_false", help="do not announce it")
    add("--ha-discovery-prefix", default="homeassistant", help="Home Assistant's discovery prefix")
    add("--ha-remove", action="store_true", default=False,
        help="remove this camera's entities from Home Assistant (and its retained topics), then exit")
    add("--webhook", default=default["webhook"], metavar="URL",
        help="POST result lines to this URL (Node-RED, n8n, ...; default: $EDGECAM_WEBHOOK)")
    add("--webhook-emit", choices=("change", "every"), default="change", help="POST on label changes or every frame")
    add("--webhook-timeout", type=non_negative_float, default=5.0, help="seconds before a POST is given up")
    add("--webhook-retries", type=int, default=3, help="retries of a failed POST, with back-off (0.5, 1, 2 s ...)")


def from_arguments(args: argparse.Namespace) -> OutputSettings:
    return OutputSettings(**{name: getattr(args, name) for name in OutputSettings.__dataclass_fields__})


def needs_tls(settings: OutputSettings) -> bool:
    """An https:// webhook needs http.client with TLS (the daemon otherwise imports it without)."""
    return bool(settings.webhook and settings.webhook.lower().startswith("https:"))


def from_settings(words: list, environ) -> OutputSettings:
    """The output settings a daemon with these flags (e.g. $EDGECAM_ARGS split) and environment would use;
    other flags are ignored (doctor reads the service's settings with it)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser, int, float, environ)
    return from_arguments(parser.parse_known_args(words)[0])
