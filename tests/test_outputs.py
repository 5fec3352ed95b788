"""device/outputs/: the registry, JSON lines on stdout (every frame or label changes), the rotating log
file, and the isolation every output gets (bounded queue, own thread, drop oldest, off once on failure)."""

import io
import json
import threading
import time
from types import SimpleNamespace

import pytest

from device.outputs import OUTPUTS, Emitter, Output, OutputContext, Outputs, configure, open_outputs
from device.outputs.logfile import LogFileOutput
from device.outputs.settings import OutputSettings
from device.outputs.stdout import StdoutOutput


def results(*labels):
    return [{"frame": index, "label": label, "confidence": 0.9} for index, label in enumerate(labels, 1)]


def context(**extra):
    return OutputContext(name="tiny", labels=["paper", "rock"], **extra)


def options(**overrides):
    values = dict(emit="every", http="off", max_fps=30.0, log_file=None, log_max_bytes=10_000, log_backups=1,
                  log_emit="change", outputs=OutputSettings())
    values.update(overrides)
    return SimpleNamespace(**values)


def test_every_and_change_modes():
    every, change = io.StringIO(), io.StringIO()
    outputs = open_outputs([StdoutOutput("every", every), StdoutOutput("change", change)], context())
    for result in results("rock", "rock", "unknown", "unknown", "rock", "paper"):
        outputs.result(result)
    outputs.close()
    assert len(every.getvalue().splitlines()) == 6
    assert [json.loads(line)["frame"] for line in change.getvalue().splitlines()] == [1, 3, 5, 6]


def test_off_mode_and_bad_mode():
    assert not Emitter("off").wants(results("rock")[0])
    with pytest.raises(ValueError, match="--emit must be one of"):
        Emitter("sometimes")


def test_a_closed_stdout_stops_emitting_instead_of_crashing():
    class Gone(io.StringIO):
        def write(self, text):
            raise BrokenPipeError

    sink = StdoutOutput("every", Gone())
    sink.write_result(results("rock")[0])
    sink.write_result(results("paper")[0])
    assert sink.emitter.mode == "off"
    sink.close()


def test_log_file_has_results_and_events_as_json_lines(tmp_path):
    path = tmp_path / "edgecam.log"
    outputs = open_outputs([LogFileOutput(str(path), max_bytes=10_000, backups=1, mode="change")], context())
    outputs.event("start", {"pid": 1})
    for result in results("rock", "rock", "paper"):
        outputs.result(result)
    outputs.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"event": "start", "pid": 1}
    assert [line["frame"] for line in lines[1:]] == [1, 3]


def test_log_file_rotates_and_keeps_backups(tmp_path):
    path = tmp_path / "edgecam.log"
    sink = LogFileOutput(str(path), max_bytes=200, backups=2, mode="every")
    sink.open()
    for result in results(*["rock"] * 30):
        sink.write_result(result)
    sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edgecam.log", "edgecam.log.1", "edgecam.log.2"]
    assert all(p.stat().st_size <= 200 for p in tmp_path.iterdir())
    assert json.loads(path.read_text().splitlines()[-1])["frame"] == 30


def test_registry_picks_outputs_from_the_flags(tmp_path):
    assert OUTPUTS == ("stdout", "logfile", "sse", "mqtt", "webhook")
    assert [o.name for o in configure(options())] == ["stdout"]
    chosen = configure(options(http="127.0.0.1:0", log_file=str(tmp_path / "x.log"),
                               outputs=OutputSettings(webhook="http://127.0.0.1:9/hook", mqtt="mqtt://127.0.0.1:9")))
    assert [o.name for o in chosen] == ["stdout", "logfile", "sse", "mqtt", "webhook"]


class Slow(Output):
    """An output that blocks until released: stands in for a stuck network peer."""
    name = "slow"
    queue_size = 5

    def __init__(self):
        super().__init__("every")
        self.release = threading.Event()
        self.entered = threading.Event()
        self.seen = []

    def write_result(self, result):
        self.entered.set()
        self.release.wait(10)
        self.seen.append(result["frame"])


def test_a_blocked_output_drops_its_oldest_and_delays_nobody():
    stream = io.StringIO()
    slow = Slow()
    outputs = open_outputs([slow, StdoutOutput("every", stream)], context())
    started = time.monotonic()
    first, *rest = results(*["rock"] * 50)
    outputs.result(first)
    assert slow.entered.wait(5)
    for result in rest:
        outputs.result(result)
    offered = time.monotonic() - started
    deadline = time.monotonic() + 5
    while len(stream.getvalue().splitlines()) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert offered < 0.5  # 50 results offered while one output was stuck
    assert len(stream.getvalue().splitlines()) == 50  # the other output got every one
    status = outputs.describe()["slow"]
    assert status["dropped"] == 50 - 1 - 5 and status["queued"] == 5  # one in the stuck write, 5 waiting
    slow.release.set()
    outputs.close()
    assert slow.seen == [1, 46, 47, 48, 49, 50]  # the newest were kept


def test_a_full_disk_turns_the_log_file_off_once(tmp_path, caplog):
    """/dev/full: every write fails with ENOSPC, as a full SD card does."""
    stream = io.StringIO()
    log_file = LogFileOutput("/dev/full", max_bytes=10_000, backups=1, mode="every")
    outputs = open_outputs([StdoutOutput("every", stream), log_file], context())
    with caplog.at_level("ERROR", logger="edgecam.outputs"):
        for result in results(*["rock", "paper"] * 20):
            outputs.result(result)
        time.sleep(0.3)
    outputs.close()
    status = outputs.describe()["logfile"]
    assert status["state"] == "failed" and status["errors"] == 1
    assert "No space left on device" in status["last_error"]
    assert len(stream.getvalue().splitlines()) == 40  # stdout went on
    errors = [record for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1 and "output logfile failed and is now off" in errors[0].getMessage()
    assert errors[0].exc_info is None


def test_a_log_file_that_cannot_be_opened_says_what_to_do_and_is_disabled(tmp_path, caplog):
    outputs = open_outputs([LogFileOutput(str(tmp_path / "no" / "such" / "x.log"), 1000)], context())
    described = outputs.describe()["logfile"]
    assert described["state"] == "disabled" and "create its folder or make it writable" in described["reason"]
    assert not outputs.channels
    assert [r.getMessage() for r in caplog.records if "output logfile is disabled" in r.getMessage()]


def test_outputs_without_channels_is_harmless():
    outputs = Outputs([])
    outputs.result(results("rock")[0])
    outputs.close()
    assert outputs.describe() == {}


# ---- settings: flags, environment, credentials --------------------------------------------------
def test_output_flags_default_from_the_environment_file_variables(monkeypatch):
    from device.cli import build_parser
    from device.outputs.settings import from_arguments

    monkeypatch.setenv("EDGECAM_MQTT", "mqtt://broker.local")
    monkeypatch.setenv("EDGECAM_WEBHOOK", "http://127.0.0.1:1880/edgecam")
    monkeypatch.setenv("EDGECAM_NAME", "Front door")
    settings = from_arguments(build_parser().parse_args(["--bundle", "b"]))
    assert settings.name == "Front door"
    assert settings.mqtt == "mqtt://broker.local" and settings.webhook == "http://127.0.0.1:1880/edgecam"
    assert settings.ha_discovery is True and settings.mqtt_emit == "change" and settings.mqtt_qos == 0
    settings = from_arguments(build_parser().parse_args(["--bundle", "b", "--mqtt", "mqtts://other:8883",
                                                         "--no-ha-discovery", "--mqtt-qos", "1"]))
    assert settings.mqtt == "mqtts://other:8883" and settings.ha_discovery is False and settings.mqtt_qos == 1


def test_install_writes_a_commented_output_template():
    from pathlib import Path

    script = (Path(__file__).resolve().parent.parent / "deploy/install.sh").read_text()
    template = script.split("cat >\"$tmp\" <<'EOF'", 1)[1].split("\nEOF\n", 1)[0]
    for variable in ("EDGECAM_MQTT=", "EDGECAM_MQTT_USERNAME=", "EDGECAM_MQTT_PASSWORD=", "EDGECAM_WEBHOOK="):
        assert f"# {variable}" in template, variable  # commented out: nothing changes until the user says so
    assert 'if [ -f "$ENV_FILE" ]; then' in script  # an existing file is kept (its lines copied over)


def test_mqtt_urls_and_credentials(tmp_path):
    from device.outputs.mqtt import load_credentials, parse_url

    assert parse_url("mqtt://broker") == ("broker", 1883, False)
    assert parse_url("mqtts://broker:8884") == ("broker", 8884, True)
    with pytest.raises(ValueError, match="do not put credentials in the URL.*--mqtt-credentials FILE.*"
                                         "EDGECAM_MQTT_USERNAME"):
        parse_url("mqtt://user:secret@broker")
    with pytest.raises(ValueError, match="expected mqtt://HOST"):
        parse_url("http://broker")
    path = tmp_path / "credentials"
    path.write_text("\ncamera:pa:ss word\n")
    assert load_credentials(str(path), {}) == ("camera", "pa:ss word")
    assert load_credentials(None, {"EDGECAM_MQTT_USERNAME": "u", "EDGECAM_MQTT_PASSWORD": "p"}) == ("u", "p")
    assert load_credentials(None, {}) is None
    path.write_text("just-a-password\n")
    with pytest.raises(ValueError, match="USERNAME:PASSWORD"):
        load_credentials(str(path), {})
    with pytest.raises(ValueError, match="cannot be read"):
        load_credentials(str(tmp_path / "missing"), {})


def test_mqtt_without_paho_says_how_to_install_it(monkeypatch):
    import sys

    from device.outputs.mqtt import MqttOutput

    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)  # as on a Pi without the extra
    output = MqttOutput(OutputSettings(mqtt="mqtt://127.0.0.1:1"))
    with pytest.raises(ValueError, match=r"--mqtt needs paho-mqtt, .* -m pip install 'paho-mqtt>=2'"):
        output.open(context())
    with pytest.raises(ValueError, match="--mqtt-ca is for mqtts://"):
        MqttOutput(OutputSettings(mqtt="mqtt://127.0.0.1:1", mqtt_ca="/etc/hostname"))


class Stubborn(Output):
    """A write that ignores interrupt() and goes on for a while (a write to a stuck disk): records whether
    the output was closed while that write was still running."""
    name = "stubborn"

    def __init__(self):
        super().__init__("every")
        self.inside = threading.Event()
        self.release = threading.Event()
        self.closed = threading.Event()
        self.writing = False
        self.closed_during_write = None

    def write_result(self, result):
        self.writing = True
        self.inside.set()
        self.release.wait(10)
        self.writing = False

    def close(self):
        self.closed_during_write = self.writing
        self.closed.set()


def test_close_never_closes_an_output_while_its_worker_is_inside_a_write():
    stubborn = Stubborn()
    outputs = open_outputs([stubborn], context())
    outputs.result(results("rock")[0])
    assert stubborn.inside.wait(5)
    started = time.monotonic()
    outputs.close(seconds=0.1)
    assert time.monotonic() - started < 1.0  # shutdown stays bounded
    assert not stubborn.closed.is_set()  # not under the write's feet
    stubborn.release.set()
    assert stubborn.closed.wait(5)  # the worker closes it once the write returned
    assert stubborn.closed_during_write is False
    assert outputs.channels[0].state == "closed"


def test_mqtt_topic_and_name_must_be_publishable():
    """--mqtt-topic 'edgecam/#' used to start, say MQTT ok in /status, and drop every result."""
    from device.outputs.mqtt import MqttOutput

    for topic, why in [("edgecam/#", "wildcards"), ("edgecam/+/x", "wildcards"), ("edgecam/\nx", "control"),
                       ("edgecam//x", "empty level"), ("edgecam/", "empty level"), ("", "empty"),
                       ("$SYS/x", "belong to the broker")]:
        with pytest.raises(ValueError, match=f"--mqtt-topic.*{why}.*e.g. edgecam/kitchen"):
            MqttOutput(OutputSettings(mqtt="mqtt://127.0.0.1:1", mqtt_topic=topic))
    assert MqttOutput(OutputSettings(mqtt="mqtt://127.0.0.1:1", mqtt_topic="edgecam/kitchen-1.a_b")).topic
    with pytest.raises(ValueError, match="--name"):
        MqttOutput(OutputSettings(mqtt="mqtt://127.0.0.1:1", name="two\nlines"))


def test_home_assistant_names_and_the_kiosk_address(monkeypatch):
    import socket

    from device.outputs import homeassistant

    monkeypatch.setattr(socket, "gethostname", lambda: "kitchenpi")
    assert homeassistant.default_name("edgecam/rps") == "kitchenpi rps"
    from device.outputs.mqtt import default_topic  # fleets: two Pis with one bundle publish apart

    assert default_topic("rps") == "edgecam/kitchenpi/rps"
    assert default_topic("my rps", "Door-Pi.lan") == "edgecam/door-pi/my_rps"
    assert homeassistant.default_name(default_topic("rps")) == "kitchenpi rps"  # the device name carries the host
    assert homeassistant.kiosk_url("0.0.0.0:8080") == "http://kitchenpi.local:8080/"
    assert homeassistant.kiosk_url("192.168.1.20:8080") == "http://192.168.1.20:8080/"
    assert homeassistant.kiosk_url("[fd00::2]:8080") == "http://[fd00::2]:8080/"
    for loopback in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "off", "0.0.0.0:0"):
        assert homeassistant.kiosk_url(loopback) is None, loopback
    assert homeassistant.unsure_value(["rock", "uncertain"]) == "uncertain_reading"
