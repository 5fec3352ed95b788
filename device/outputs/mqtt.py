"""MQTT with Home Assistant discovery (paho-mqtt, imported only when ``--mqtt`` is on).

Topics under ``--mqtt-topic`` (default ``edgecam/<bundle name>``):

    <topic>/state          the label, retained (what Home Assistant's sensors read)
    <topic>/result         the JSON result line, on label change (or every frame: --mqtt-emit every)
    <topic>/availability   online / offline, retained; offline is also the last will (a crash says so)
    <topic>/status         the daemon's /status every --mqtt-status-interval seconds

Home Assistant discovery (``--ha-discovery-prefix``, on unless ``--no-ha-discovery``): one device with a
label sensor, a confidence sensor and one binary_sensor per class ("Sees paper"), all bound to the
availability topic. ``--ha-remove`` publishes empty configs, which removes them.

Reconnects with back-off (1 s to 30 s) while inference goes on; while the broker is away the Channel's
bounded queue holds the newest messages (``--mqtt-queue``, oldest dropped and counted). A broker that
refuses the credentials is a configuration error: exit 2 at start, the output turns off later.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import re
import socket
import threading
from urllib.parse import urlsplit

from device import __version__
from device.outputs.base import Output, to_json

log = logging.getLogger("edgecam.outputs.mqtt")
CONNECT_WAIT_S = 3.0    # at start, how long to wait for the broker's answer before going on without it
IN_FLIGHT = 64          # messages handed to paho but not yet on the wire; beyond it, results wait in the queue
SEND_BUFFER = 32 * 1024 # kernel send buffer: a broker that stops reading holds at most this much (not ~4 MB)
REFUSED = {4: "bad user name or password", 5: "not authorised", 134: "bad user name or password",
           135: "not authorised"}
CREDENTIALS_HELP = ("put USERNAME:PASSWORD in a file (chmod 600) and pass --mqtt-credentials FILE, or set "
                    "EDGECAM_MQTT_USERNAME and EDGECAM_MQTT_PASSWORD (e.g. in /etc/default/edgecam)")


def parse_url(url: str) -> tuple:
    """``mqtt://host[:port]`` / ``mqtts://host[:port]`` -> (host, port, tls). Credentials are refused."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"--mqtt {url!r}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], "
                         "e.g. mqtt://homeassistant.local")
    if parts.username or parts.password:
        raise ValueError(f"--mqtt: do not put credentials in the URL (they would show in `ps` and logs); "
                         f"{CREDENTIALS_HELP}.")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"--mqtt {url!r}: the port must be a number 1..65535.") from None
    tls = parts.scheme == "mqtts"
    return parts.hostname, port or (8883 if tls else 1883), tls


def load_credentials(path: str | None, environ=None) -> tuple | None:
    """(username, password) from the file, else from the environment, else None."""
    environ = os.environ if environ is None else environ
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                line = next((text.strip() for text in handle if text.strip()), "")
        except OSError as error:
            raise ValueError(f"--mqtt-credentials {path}: cannot be read ({error.strerror}); "
                             f"{CREDENTIALS_HELP}.") from None
        username, separator, password = line.partition(":")
        if not separator or not username:
            raise ValueError(f"--mqtt-credentials {path}: the first line must be USERNAME:PASSWORD.")
        return username, password
    username = environ.get("EDGECAM_MQTT_USERNAME")
    if username:
        return username, environ.get("EDGECAM_MQTT_PASSWORD", "")
    return None


def slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]+", "_", text).strip("_") or "x"


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


def discovery(prefix: str, topic: str, name: str, labels: list, model: str = "", machine: str = "") -> dict:
    """Home Assistant MQTT discovery: {config topic: payload dict} for the label and confidence sensors and
    one binary_sensor per class."""
    machine = machine or machine_id()
    node = slug(f"edgecam_{machine}_{topic}")
    availability = {"availability_topic": f"{topic}/availability", "payload_available": "online",
                    "payload_not_available": "offline"}
    device = {"identifiers": [node], "name": f"edgecam {name}", "manufacturer": "edgecam",
              "model": f"edgecam classifier{f' ({model})' if model else ''}", "sw_version": __version__}
    configs = {
        f"{prefix}/sensor/{node}/label/config": {
            "name": "Label", "unique_id": f"{node}_label", "state_topic": f"{topic}/state",
            "icon": "mdi:eye", **availability, "device": device},
        f"{prefix}/sensor/{node}/confidence/config": {
            "name": "Confidence", "unique_id": f"{node}_confidence", "state_topic": f"{topic}/result",
            "value_template": "{{ (value_json.confidence * 100) | round(1) }}", "unit_of_measurement": "%",
            "state_class": "measurement", "icon": "mdi:percent", **availability, "device": device},
    }
    for label in labels:
        configs[f"{prefix}/binary_sensor/{node}/{slug(label)}/config"] = {
            "name": f"Sees {label}", "unique_id": f"{node}_{slug(label)}", "state_topic": f"{topic}/state",
            "value_template": "{{ 'ON' if value == %s else 'OFF' }}" % json.dumps(label),
            "payload_on": "ON", "payload_off": "OFF", **availability, "device": device}
    return configs


def limit_send_buffer(client, userdata, sock) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    except (OSError, AttributeError):
        pass


def default_topic(name: str) -> str:
    return f"edgecam/{slug(name)}"


class MqttOutput(Output):
    name = "mqtt"

    def __init__(self, settings, credentials: tuple | None = None):
        super().__init__(settings.mqtt_emit, "--mqtt-emit")
        self.settings = settings
        self.host, self.port, self.tls = parse_url(settings.mqtt)
        if self.tls and settings.mqtt_ca and not os.path.isfile(settings.mqtt_ca):
            raise ValueError(f"--mqtt-ca {settings.mqtt_ca}: no such file; pass the CA certificate (PEM) that "
                             "signed the broker's certificate.")
        if settings.mqtt_ca and not self.tls:
            raise ValueError("--mqtt-ca is for mqtts:// brokers: use mqtts://HOST:8883, or drop --mqtt-ca.")
        self.credentials = credentials
        self.queue_size = settings.mqtt_queue
        self.qos = settings.mqtt_qos
        self.topic = settings.mqtt_topic
        self.client = None
        self.context = None
        self.connected = threading.Event()
        self.answered = threading.Event()
        self.stopping = threading.Event()
        self.refused: str | None = None
        self.state: str | None = None
        self.pending: collections.deque = collections.deque()
        self.connects = 0
        self.status_thread: threading.Thread | None = None

    @classmethod
    def configure(cls, options):
        settings = options.outputs
        if not settings.mqtt:
            return None
        return cls(settings, load_credentials(settings.mqtt_credentials))

    # ---- connection -----------------------------------------------------------------------
    def make_client(self, client_id: str):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise ValueError("--mqtt needs paho-mqtt: pip install 'edgecam[mqtt]' (or paho-mqtt>=2), or drop "
                             "--mqtt.") from None
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        if self.credentials:
            client.username_pw_set(*self.credentials)
        if self.tls:
            client.tls_set(ca_certs=self.settings.mqtt_ca)
        client.connect_timeout = CONNECT_WAIT_S
        client.on_socket_open = limit_send_buffer
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        return client

    def open(self, context) -> None:
        self.context = context
        self.topic = self.topic or default_topic(context.name)
        client = self.client = self.make_client(f"edgecam-{machine_id()}-{slug(self.topic)}"[:64])
        client.will_set(f"{self.topic}/availability", "offline", qos=1, retain=True)
        client.on_connect = self.on_connect
        client.on_disconnect = self.on_disconnect
        reached = True
        try:
            client.connect(self.host, self.port, keepalive=30)
        except ValueError:
            raise
        except OSError as error:
            reached = False
            if type(error).__module__ == "ssl" or "CERTIFICATE" in str(error).upper():
                raise ValueError(f"--mqtt {self.settings.mqtt}: TLS failed ({error}); pass --mqtt-ca with the "
                                 "CA that signed the broker's certificate.") from None
            log.warning("MQTT broker %s:%d not reachable yet (%s); retrying in the background",
                        self.host, self.port, error.strerror or error)
            self.count_error(f"cannot reach {self.host}:{self.port} ({error.strerror or error})")
        client.loop_start()
        if reached:  # wait for the broker's answer: refused credentials are an error now, not later
            self.answered.wait(CONNECT_WAIT_S)
        if self.refused:
            client.loop_stop()
            raise ValueError(f"--mqtt {self.settings.mqtt}: the broker refused the connection "
                             f"({self.refused}); {CREDENTIALS_HELP}.")
        if self.settings.mqtt_status_interval > 0:
            self.status_thread = threading.Thread(target=self.publish_status_forever, daemon=True,
                                                  name="edgecam-mqtt-status")
            self.status_thread.start()

    def on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        code = getattr(reason_code, "value", reason_code)
        if code:
            reason = REFUSED.get(code, str(reason_code))
            if code in REFUSED:
                self.refused = reason
                self.answered.set()
                client.disconnect()
                client.loop_stop()
                if self.channel is not None and self.channel.state == "ok":
                    self.channel.fail(ValueError(f"the broker refused the connection ({reason})"))
                return
            self.count_error(f"broker refused the connection ({reason})")
            return
        self.connects += 1
        self.pending.clear()
        client.publish(f"{self.topic}/availability", "online", qos=1, retain=True)
        if self.settings.ha_discovery:
            labels = self.context.labels
            for topic, payload in discovery(self.settings.ha_discovery_prefix, self.topic, self.context.name,
                                            labels, self.context.model).items():
                client.publish(topic, json.dumps(payload), qos=1, retain=True)
        if self.state is not None:
            client.publish(f"{self.topic}/state", self.state, qos=self.qos, retain=True)
        if self.connects > 1:
            log.info("MQTT reconnected to %s:%d", self.host, self.port)
        self.connected.set()
        self.answered.set()

    def on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        self.pending.clear()
        if was_connected and not self.stopping.is_set():
            log.warning("MQTT lost the broker %s:%d (%s); reconnecting", self.host, self.port, reason_code)
            self.count_error(f"lost the broker ({reason_code})")

    # ---- writing ---------------------------------------------------------------------------
    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        """Publish once the broker is there and fewer than IN_FLIGHT messages wait for the wire."""
        while not self.stopping.is_set():
            if not self.connected.wait(0.25):
                continue
            while self.pending and self.pending[0].is_published():
                self.pending.popleft()
            if len(self.pending) >= IN_FLIGHT:
                self.stopping.wait(0.02)
                continue
            info = self.client.publish(topic, payload, qos=self.qos, retain=retain)
            if info.rc == 0:
                self.pending.append(info)
                return
            self.stopping.wait(0.1)  # lost the connection in between: wait for it and try again

    def write_result(self, result: dict) -> None:
        if result["label"] != self.state:
            self.publish(f"{self.topic}/state", result["label"], retain=True)
            self.state = result["label"]
        self.publish(f"{self.topic}/result", to_json(result))

    def publish_status_forever(self) -> None:
        interval = self.settings.mqtt_status_interval
        while not self.stopping.wait(interval):
            if self.connected.is_set() and len(self.pending) < IN_FLIGHT:
                try:
                    self.client.publish(f"{self.topic}/status", to_json(self.context.status()), qos=0)
                except Exception as error:  # noqa: BLE001 - status is best effort
                    self.count_error(error)

    def close(self) -> None:
        if self.stopping.is_set() or self.client is None:
            return
        self.stopping.set()
        if self.connected.is_set():
            info = self.client.publish(f"{self.topic}/availability", "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=0.3)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    def health(self) -> dict:
        return {"connected": self.connected.is_set(), "broker": f"{self.host}:{self.port}", "topic": self.topic,
                "tls": self.tls, "connects": self.connects}


def remove_home_assistant(settings, name: str, labels: list, model: str = "") -> int:
    """``--ha-remove``: empty retained configs (Home Assistant deletes the entities) and clear the retained
    state and availability. Returns the exit code (0, or 3 when the broker cannot be reached)."""
    output = MqttOutput(settings, load_credentials(settings.mqtt_credentials))
    topic = settings.mqtt_topic or default_topic(name)
    client = output.make_client(f"edgecam-remove-{machine_id()}"[:64])
    done = threading.Event()
    answer: list = []

    def on_connect(client, userdata, flags, reason_code, properties=None):
        answer.append(getattr(reason_code, "value", reason_code))
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(output.host, output.port, keepalive=10)
    except OSError as error:
        print(f"edgecam: --ha-remove: cannot reach {output.host}:{output.port} ({error}); try again when the "
              "broker is up.")
        return 3
    client.loop_start()
    if not done.wait(CONNECT_WAIT_S) or answer[0]:
        client.loop_stop()
        reason = REFUSED.get(answer[0], str(answer[0])) if answer else "no answer"
        print(f"edgecam: --ha-remove: the broker did not accept the connection ({reason}).")
        return 2 if answer and answer[0] in REFUSED else 3
    topics = list(discovery(settings.ha_discovery_prefix, topic, name, labels, model))
    topics += [f"{topic}/state", f"{topic}/availability"]
    infos = [client.publish(item, b"", qos=1, retain=True) for item in topics]
    for info in infos:
        info.wait_for_publish(timeout=5)
    client.disconnect()
    client.loop_stop()
    print(f"edgecam: removed {len(topics) - 2} Home Assistant entities and the retained topics of {topic}")
    return 0


OUTPUT = MqttOutput
