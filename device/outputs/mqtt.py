"""MQTT with Home Assistant discovery (paho-mqtt, imported only when ``--mqtt`` is on).

Topics under ``--mqtt-topic`` (default ``edgecam/<host name>/<bundle name>``):

    <topic>/state          {"label": ..., "confidence": ...}, retained: on each label change and every
                           --mqtt-state-interval seconds while the confidence moves (what HA's sensors read)
    <topic>/result         the JSON result line, on label change (or every frame: --mqtt-emit every)
    <topic>/availability   online / offline, retained: the process; offline is also the last will
    <topic>/health         online / offline, retained: the pipeline (camera delivering, model classifying)
    <topic>/status         the daemon's /status, retained, every --mqtt-status-interval seconds and on changes

Home Assistant discovery (``--ha-discovery-prefix``, on unless ``--no-ha-discovery``; the configs are in
device/outputs/homeassistant.py): one device per camera (``--name``). When the labels change (a taught
head, an undo, SIGHUP, a new release) the configs follow: new classes get theirs, gone classes' configs
are emptied. ``--ha-remove`` empties every config this camera published, which removes the device.

Reconnects with back-off (1 s to 30 s) while inference goes on; while the broker is away the Channel's
bounded queue holds the newest messages (``--mqtt-queue``, oldest dropped and counted). A broker that
refuses the credentials is a configuration error: the output is disabled at start (the camera goes on,
/status says why), and turns off later.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

from device.outputs.base import Output, to_json
from device.outputs.haregions import RegionPublisher
from device.outputs.homeassistant import client_id, default_name, discovery, kiosk_url, machine_id, node_id, slug

log = logging.getLogger("edgecam.outputs.mqtt")
CONNECT_WAIT_S = 3.0    # at start, how long to wait for the broker's answer before going on without it
IN_FLIGHT = 64          # messages handed to paho but not yet on the wire; beyond it, results wait in the queue
SEND_BUFFER = 32 * 1024 # kernel send buffer: a broker that stops reading holds at most this much (not ~4 MB)
REFUSED = {4: "bad user name or password", 5: "not authorised", 134: "bad user name or password",
           135: "not authorised"}
STALL_S = 5.0           # no frame classified for this long (or 5 frame intervals at --max-fps): not working
WATCH_S = 0.5           # how often the pipeline's health is looked at
TOPIC_HELP = "use levels of letters, digits, '-', '_' and '.', e.g. edgecam/kitchen"
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


def check_topic(topic: str) -> str:
    """--mqtt-topic must be a topic one can publish to: no wildcards, no empty levels, no control characters."""
    problem = None
    if not topic:
        problem = "it is empty"
    elif "#" in topic or "+" in topic:
        problem = "'#' and '+' are subscription wildcards, not a place to publish"
    elif any(ord(character) < 32 or ord(character) == 127 for character in topic):
        problem = "it holds a control character (a newline?)"
    elif "" in topic.split("/"):
        problem = "it has an empty level (a leading, trailing or double '/')"
    elif topic.startswith("$"):
        problem = "topics starting with '$' belong to the broker"
    elif len(topic.encode("utf-8")) > 1024:
        problem = "it is longer than 1024 bytes"
    if problem:
        raise ValueError(f"--mqtt-topic {topic!r}: {problem}; {TOPIC_HELP}.")
    return topic


def check_name(name: str) -> str:
    if not name.strip() or any(ord(character) < 32 or ord(character) == 127 for character in name) \
            or len(name) > 100:
        raise ValueError(f"--name {name!r}: give the camera a name of 1 to 100 printable characters, e.g. "
                         "'kitchen camera'.")
    return name.strip()


def limit_send_buffer(client, userdata, sock) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    except (OSError, AttributeError):
        pass


def default_topic(name: str, host: str | None = None) -> str:
    """``edgecam/<host name>/<bundle name>``: two Pis running the same bundle publish apart (a fleet's
    entities never collide). Before 2026-12 it was ``edgecam/<bundle name>``: --mqtt-topic keeps that."""
    host = (host or socket.gethostname()).split(".")[0].lower()
    return f"edgecam/{slug(host) if host else 'edgecam'}/{slug(name)}"


def import_paho():
    """paho.mqtt.client, or a ValueError that says how to install it into the Python that runs edgecam."""
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise ValueError(f"--mqtt needs paho-mqtt, which this Python ({sys.executable}) cannot import: install "
                         f"it with `{sys.executable} -m pip install 'paho-mqtt>=2'` (on a Pi: deploy a current "
                         "archive, whose requirements carry it), or drop --mqtt / EDGECAM_MQTT.") from None
    return mqtt


def state_payload(result: dict) -> str:
    return to_json({"label": result["label"], "confidence": round(float(result["confidence"]), 3)})


class MqttOutput(Output):
    name = "mqtt"
    takes_status = True   # a state change (camera lost, recovered) is published at once
    takes_labels = True   # discovery follows the labels (a taught head, an undo, a new release)

    def __init__(self, settings, credentials: tuple | None = None, http: str = "off", max_fps: float = 0.0):
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
        self.topic = check_topic(settings.mqtt_topic) if settings.mqtt_topic is not None else None
        self.device_name = check_name(settings.name) if settings.name is not None else None
        self.url = kiosk_url(http)
        self.stall_s = max(STALL_S, 5.0 / max_fps) if max_fps > 0 else STALL_S
        self.client = None
        self.context = None
        self.connected = threading.Event()
        self.answered = threading.Event()
        self.stopping = threading.Event()   # a write in progress gives up (close, or the Channel's interrupt)
        self.closed = False
        self.refused: str | None = None
        self.state: str | None = None       # the last <topic>/state payload (republished on reconnect)
        self.label: str | None = None       # the label of the last <topic>/result
        self.pending: collections.deque = collections.deque()  # the worker's alone: paho's thread never touches it
        self.sessions = 0                   # bumped by paho's thread on every (dis)connect: pending is void
        self.pending_session = 0
        self.connects = 0
        self.frame_at: float | None = None  # time.monotonic() of the last classified frame
        self.state_at = 0.0
        self.working: tuple = (False, "starting: no frame classified yet")
        self.health_lock = threading.Lock()
        self.watch_thread: threading.Thread | None = None
        self.regions = RegionPublisher()    # --region: a label and confidence sensor per region (haregions.py)

    @classmethod
    def configure(cls, options):
        settings = options.outputs
        if not settings.mqtt:
            return None
        output = cls(settings, load_credentials(settings.mqtt_credentials), options.http, options.max_fps)
        import_paho()  # a missing library disables this output before the model loads (device/outputs/)
        return output

    # ---- names -----------------------------------------------------------------------------
    def configs(self, labels: list | None = None) -> dict:
        context = self.context
        return discovery(self.settings.ha_discovery_prefix, self.topic, self.device_name,
                         context.labels if labels is None else labels, machine_id(), context.model,
                         self.url) | self.regions.configs(self)

    # ---- connection -----------------------------------------------------------------------
    def make_client(self, client_id: str):
        mqtt = import_paho()
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
        self.device_name = self.device_name or default_name(self.topic)
        self.regions.regions = list(context.extra.get("regions") or [])
        if self.settings.ha_discovery:
            self.configs()  # two labels with one id: refused now, with the labels named (ValueError)
        client = self.client = self.make_client(client_id(self.topic, machine_id()))
        client.will_set(f"{self.topic}/availability", "offline", qos=1, retain=True)
        client.on_connect = self.on_connect
        client.on_disconnect = self.on_disconnect
        client.on_message = self.on_message
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
        self.watch_thread = threading.Thread(target=self.watch, daemon=True, name="edgecam-mqtt-watch")
        self.watch_thread.start()

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
        self.sessions += 1
        # health first: the retained "online" of a process killed while working must not show its old state
        client.publish(f"{self.topic}/health", "online" if self.working[0] else "offline", qos=1, retain=True)
        client.publish(f"{self.topic}/availability", "online", qos=1, retain=True)
        if self.settings.ha_discovery:
            for topic, payload in self.configs().items():
                client.publish(topic, json.dumps(payload), qos=1, retain=True)
            # retained configs under this node that it does not know (classes gone while it was down): emptied
            client.subscribe(f"{self.settings.ha_discovery_prefix}/+/{node_id(self.topic, machine_id())}/+/config",
                             qos=1)
        if self.state is not None:
            client.publish(f"{self.topic}/state", self.state, qos=self.qos, retain=True)
        self.regions.republish(client, self.qos)
        if self.connects > 1:
            log.info("MQTT reconnected to %s:%d", self.host, self.port)
        self.connected.set()
        self.answered.set()

    def on_message(self, client, userdata, message) -> None:
        """A retained config under this camera's node (paho's thread): emptied unless it is one of ours now."""
        if not message.retain or not message.payload:
            return
        try:
            known = self.configs()
        except ValueError:  # labels whose ids collide: write_labels keeps the last good configs and says why
            return
        if message.topic not in known:
            client.publish(message.topic, b"", qos=1, retain=True)
            log.info("MQTT: emptied the retained Home Assistant config %s (an entity this camera no longer has)",
                     message.topic)

    def on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        self.sessions += 1
        if was_connected and not self.stopping.is_set():
            log.warning("MQTT lost the broker %s:%d (%s); reconnecting", self.host, self.port, reason_code)
            self.count_error(f"lost the broker ({reason_code})")

    # ---- writing (the Channel's worker thread) -----------------------------------------------
    def publish(self, topic: str, payload: str, retain: bool = False, qos: int | None = None) -> None:
        """Publish once the broker is there and fewer than IN_FLIGHT messages wait for the wire."""
        while not self.stopping.is_set():
            if not self.connected.wait(0.25):
                continue
            session = self.sessions
            if session != self.pending_session:  # a new connection: what was in flight is gone with the old one
                self.pending.clear()
                self.pending_session = session
            while self.pending and self.pending[0].is_published():
                self.pending.popleft()
            if len(self.pending) >= IN_FLIGHT:
                self.stopping.wait(0.02)
                continue
            info = self.client.publish(topic, payload, qos=self.qos if qos is None else qos, retain=retain)
            if info.rc == 0:
                self.pending.append(info)
                return
            self.stopping.wait(0.1)  # lost the connection in between: wait for it and try again

    def wants(self, result: dict) -> bool:
        """Called for every frame (inference thread): a label change, a due state refresh, or --mqtt-emit every."""
        now = self.frame_at = time.monotonic()
        changed = self.emitter.wants(result)
        interval = self.settings.mqtt_state_interval
        if changed or (interval > 0 and now - self.state_at >= interval):
            self.state_at = now
            return True
        return False

    def write_result(self, result: dict) -> None:
        if "region" in result:
            return self.regions.write_result(self, result)
        state = state_payload(result)
        if state != self.state:
            self.publish(f"{self.topic}/state", state, retain=True)
            self.state = state
        if self.emitter.mode == "every" or result["label"] != self.label:
            self.publish(f"{self.topic}/result", to_json(result))
            self.label = result["label"]

    def write_status(self, status: dict) -> None:
        self.check_health(status)

    def write_regions(self, regions: list) -> None:
        self.regions.write_regions(self, regions)

    def write_labels(self, labels: list) -> None:
        """The classifier's labels changed: publish the configs of the new set, empty those of gone classes."""
        old = list(self.context.labels)
        if labels == old:
            return
        if self.settings.ha_discovery:
            try:
                configs = self.configs(list(labels))
            except ValueError as error:  # the entities stay as they were; the next labels may be fine
                log.error("MQTT: Home Assistant entities not changed: %s", error)
                self.count_error(error)
                return
        self.context.labels = list(labels)
        if not self.settings.ha_discovery:
            return
        for topic, payload in configs.items():
            self.publish(topic, json.dumps(payload), retain=True, qos=1)
        for topic in self.configs(old):
            if topic not in configs:
                self.publish(topic, "", retain=True, qos=1)
        log.info("MQTT: Home Assistant entities now follow the labels %s", ", ".join(labels))

    # ---- health and status (the watch thread) ------------------------------------------------
    def health(self) -> dict:
        return {"connected": self.connected.is_set(), "broker": f"{self.host}:{self.port}", "topic": self.topic,
                "tls": self.tls, "connects": self.connects, "working": self.working[0]}

    def evaluate(self) -> tuple:
        """(working, reason): the daemon's own health, and frames actually being classified."""
        healthy, reason = self.context.health()
        if not healthy:
            return False, reason or "not healthy"
        if self.frame_at is None or (self.state is None and not self.regions.states):  # the first state is out
            return False, "starting: no frame classified yet"
        idle = time.monotonic() - self.frame_at
        if idle > self.stall_s:
            return False, f"no frame classified for {idle:.0f} s (the pipeline stalled or every frame fails)"
        return True, None

    def check_health(self, status: dict | None = None) -> None:
        """Publish <topic>/health (and the status, which says why) when working turns on or off."""
        with self.health_lock:  # the worker (on a status) and the watch thread both look
            working = self.evaluate()
            changed = working[0] != self.working[0]
            self.working = working
        if changed and self.connected.is_set():
            self.client.publish(f"{self.topic}/health", "online" if working[0] else "offline", qos=1, retain=True)
        if changed:
            if not working[0]:
                log.warning("MQTT: Home Assistant shows this camera unavailable: %s", working[1])
            self.publish_status(status)

    def publish_status(self, status: dict | None = None) -> None:
        if not self.connected.is_set() or len(self.pending) >= IN_FLIGHT:
            return
        try:
            status = dict(status or self.context.status(), problem=self.working[1])
            self.client.publish(f"{self.topic}/status", to_json(status), qos=0, retain=True)
        except Exception as error:  # noqa: BLE001 - status is best effort
            self.count_error(error)

    def watch(self) -> None:
        interval = self.settings.mqtt_status_interval
        next_status = time.monotonic()
        while not self.stopping.wait(WATCH_S):
            try:
                self.check_health()
            except Exception as error:  # noqa: BLE001 - health is best effort, inference goes on
                self.count_error(error)
            if interval > 0 and time.monotonic() >= next_status:
                self.publish_status()
                next_status = time.monotonic() + interval

    def interrupt(self) -> None:
        self.stopping.set()

    def close(self) -> None:
        if self.closed or self.client is None:
            return
        self.closed = True
        self.stopping.set()
        if self.connected.is_set():
            info = self.client.publish(f"{self.topic}/availability", "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=0.3)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()


def remove_home_assistant(settings, name: str, labels: list, model: str = "") -> int:
    """``--ha-remove``: empty every retained discovery config this camera published (Home Assistant deletes
    the entities and the device), found by subscribing to them, and clear the retained topics. Returns the
    exit code (0, or 3 when the broker cannot be reached)."""
    output = MqttOutput(settings, load_credentials(settings.mqtt_credentials))
    topic = output.topic or default_topic(name)
    device = output.device_name or default_name(topic)
    client = output.make_client(f"edgecam-remove-{machine_id()}"[:64])
    done, subscribed = threading.Event(), threading.Event()
    answer: list = []
    found: dict = {}

    def on_connect(client, userdata, flags, reason_code, properties=None):
        answer.append(getattr(reason_code, "value", reason_code))
        done.set()

    def on_message(client, userdata, message):
        found[message.topic] = bool(message.payload)

    client.on_connect = on_connect
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
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
    node = node_id(topic, machine_id())
    client.subscribe(f"{settings.ha_discovery_prefix}/+/{node}/+/config", qos=1)
    subscribed.wait(CONNECT_WAIT_S)
    time.sleep(0.5)  # the broker sends the retained configs right after the subscription's answer
    client.unsubscribe(f"{settings.ha_discovery_prefix}/+/{node}/+/config")
    configs = {item for item, held in found.items() if held}
    configs |= set(discovery(settings.ha_discovery_prefix, topic, device, labels, machine_id(), model))

    def empty(topics: list) -> None:
        for info in [client.publish(item, b"", qos=1, retain=True) for item in topics]:
            info.wait_for_publish(timeout=5)

    empty(sorted(configs))
    time.sleep(1.0)  # Home Assistant removes the entities before the topics they read are emptied
    empty([f"{topic}/{part}" for part in ("state", "health", "status", "availability")])
    client.disconnect()
    client.loop_stop()
    print(f"edgecam: removed {len(configs)} Home Assistant entities of {device!r} and the retained topics of "
          f"{topic}")
    return 0


OUTPUT = MqttOutput
