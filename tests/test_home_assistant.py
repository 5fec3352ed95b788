"""The camera as a Home Assistant user sees it: a real Home Assistant core (tests/home_assistant.py: installed
from PyPI into a cached venv of its own) on the test's real Mosquitto, the real daemon replaying image
folders, and every check read back through Home Assistant's own REST API and recorder.

One Home Assistant for the whole story (it takes a while to start): the discovery configs are accepted (no
ERROR line in its log), the device and its entities have the ids and names the README shows, the
diagnostics say what the camera does, a lost camera makes the readings unavailable and the diagnostics
say why, kill -9 makes everything unavailable, the label and confidence follow the frames in the
recorder, a new set of labels is followed without a restart, and --ha-remove removes the device.

Skips (saying why) without mosquitto, without Python 3.11, or where Home Assistant cannot be installed."""

import json
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import device_bundle
import pytest
from conftest import copy_bundle
from home_assistant import HomeAssistant, start_install
from outputs_helpers import REPO, Broker, Daemon, need_mosquitto, wait_for

pytestmark = pytest.mark.timeout(900)  # the first run installs Home Assistant (about 2.5 minutes here)
start_install()  # at collection: the install runs while the tests before this one do
NAME = "Kitchen camera"
DEVICE = "kitchen_camera"
READINGS = [f"sensor.{DEVICE}_label", f"sensor.{DEVICE}_confidence", f"binary_sensor.{DEVICE}_sees_paper",
            f"binary_sensor.{DEVICE}_sees_rock", f"binary_sensor.{DEVICE}_sees_scissors"]
DIAGNOSTICS = [f"sensor.{DEVICE}_frames_a_second", f"sensor.{DEVICE}_camera", f"sensor.{DEVICE}_model",
               f"sensor.{DEVICE}_head_revision", f"sensor.{DEVICE}_last_error", f"binary_sensor.{DEVICE}_problem",
               f"binary_sensor.{DEVICE}_needs_teaching"]

# docs/home-assistant.md's automation, as a maker pastes it into automations.yaml (a default configuration
# includes that file), with a helper standing in for the lamp (light.desk_lamp there) and 3 s instead of 5
LAMP = """
input_boolean:
  desk_lamp:
automation: !include automations.yaml
"""


def documented_automation() -> str:
    """The yaml block under the page's "automations.yaml" marker, with the helper as the lamp."""
    page = (REPO / "docs" / "home-assistant.md").read_text()
    block = page.split("<!-- automations.yaml", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert "automation:" not in block, "automations.yaml holds a list, never a second automation: key"
    return (block.replace("light.turn_", "input_boolean.turn_").replace("light.desk_lamp", "input_boolean.desk_lamp")
            .replace("kitchen_camera", DEVICE).replace('"00:00:05"', '"00:00:03"'))


@pytest.fixture()
def home_assistant(tmp_path):
    need_mosquitto()
    broker = Broker(tmp_path / "broker")
    started = time.monotonic()
    (tmp_path / "ha").mkdir()
    (tmp_path / "ha" / "automations.yaml").write_text(documented_automation())
    home = HomeAssistant(tmp_path / "ha", broker.port, LAMP)
    print(f"Home Assistant answered in {time.monotonic() - started:.1f} s")
    yield broker, home
    home.stop()
    broker.stop()


def camera(bundle, folder, broker, *extra):
    return Daemon("--bundle", bundle, "--source", f"images:{folder}", "--mqtt", broker.url, "--name", NAME,
                  "--max-fps", "10", "--mqtt-status-interval", "1", "--mqtt-state-interval", "0.5", *extra)


def states(home, entity_ids) -> dict:
    return {entity_id: (home.state(entity_id) or {}).get("state") for entity_id in entity_ids}


def wait_states(home, entity_ids, predicate, timeout=20.0) -> dict:
    found = wait_for(lambda: (lambda now: now if all(map(predicate, now.values())) else None)(
        states(home, entity_ids)), timeout, 0.2)
    assert found, f"{states(home, entity_ids)}\n{home.tail()}"
    return found


def test_home_assistant_sees_the_camera_as_its_users_do(home_assistant, bundle, tmp_path):
    broker, home = home_assistant
    images = device_bundle.heldout(bundle)[0][1].parent.parent  # 3 classes x 8 images
    frames = tmp_path / "frames"
    shutil.copytree(images, frames)
    copy = copy_bundle(bundle, tmp_path / "bundle")

    # -- discovery: the device and its entities, as Home Assistant lists them --------------------------
    daemon = camera(copy, frames, broker)
    try:
        wait_states(home, READINGS + DIAGNOSTICS, lambda state: state not in (None, "unavailable"), 60)
        device = home.template("{{ device_id('sensor.%s_label') }}" % DEVICE)
        assert home.template("{{ device_attr('%s', 'name') }}" % device) == NAME
        assert home.template("{{ device_attr('%s', 'manufacturer') }}" % device) == "edgecam"
        assert sorted(home.template("{{ device_entities('%s') | join(' ') }}" % device).split()) == \
            sorted(READINGS + DIAGNOSTICS + [f"sensor.{DEVICE}_scene_match"])  # unknown here: no drift reference
        label = home.state(f"sensor.{DEVICE}_label")
        assert label["attributes"]["friendly_name"] == f"{NAME} Label"
        assert label["attributes"]["device_class"] == "enum"
        # (2024.3 keeps an MQTT sensor's `options` out of its state; tests/test_outputs_mqtt.py checks the config)
        assert label["state"] in ("paper", "rock", "scissors", "uncertain")
        assert home.state(f"binary_sensor.{DEVICE}_sees_paper")["attributes"]["friendly_name"] == \
            f"{NAME} Sees paper"
        status = daemon.wait_status(lambda s: s["frames"] > 10)
        diagnostics = wait_states(home, DIAGNOSTICS, lambda state: state not in (None, "unknown"))
        assert diagnostics[f"sensor.{DEVICE}_camera"] == "ok"
        assert diagnostics[f"sensor.{DEVICE}_model"] == status["model"]["sha256"][:12]
        assert diagnostics[f"sensor.{DEVICE}_head_revision"] == "0"
        assert diagnostics[f"sensor.{DEVICE}_last_error"] == "none"
        assert diagnostics[f"binary_sensor.{DEVICE}_problem"] == "off"
        assert diagnostics[f"binary_sensor.{DEVICE}_needs_teaching"] == "off"  # device/drift.py: not drifted
        assert home.state(f"sensor.{DEVICE}_scene_match")["attributes"]["unit_of_measurement"] == "%"
        assert float(wait_for(lambda: float(home.state(f"sensor.{DEVICE}_frames_a_second")["state"]) > 0 and
                              home.state(f"sensor.{DEVICE}_frames_a_second")["state"], 10)) > 0
        assert home.errors() == []  # every config accepted, every template rendered

        # -- a lost camera: the readings go unavailable, the diagnostics say why, the lamp goes off ------
        assert wait_for(lambda: home.state(f"binary_sensor.{DEVICE}_sees_paper")["state"] == "on", 10)
        assert home.state("input_boolean.desk_lamp")["state"] == "on"  # paper comes round every 2.4 s
        unplugged = frames.with_name("frames-unplugged")
        frames.rename(unplugged)
        wait_states(home, READINGS, lambda state: state == "unavailable", 15)
        lost = wait_states(home, [f"sensor.{DEVICE}_camera", f"binary_sensor.{DEVICE}_problem"],
                           lambda state: state in ("degraded", "on"), 15)
        assert lost == {f"sensor.{DEVICE}_camera": "degraded", f"binary_sensor.{DEVICE}_problem": "on"}
        error = daemon.status()["source"]["error"]  # what the daemon says about its camera
        assert error and wait_for(lambda: home.state(f"sensor.{DEVICE}_last_error")["state"][:40] == error[:40], 5)
        assert wait_for(lambda: home.state("input_boolean.desk_lamp")["state"] == "off", 10)
        unplugged.rename(frames)  # plugged back in: the daemon retries with back-off
        wait_states(home, READINGS, lambda state: state not in (None, "unavailable"), 20)

        # -- new labels (a release with a class renamed), SIGHUP: the entities follow, no restart ----------
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["labels"] = ["sheet" if label == "paper" else label for label in manifest["labels"]]
        (copy / "manifest.json").write_text(json.dumps(manifest))
        (copy / "labels.txt").write_text("\n".join(manifest["labels"]) + "\n")
        daemon.process.send_signal(signal.SIGHUP)
        wait_states(home, [f"binary_sensor.{DEVICE}_sees_sheet"], lambda state: state in ("on", "off"), 20)
        assert wait_for(lambda: home.state(f"binary_sensor.{DEVICE}_sees_paper") is None, 10)
        assert home.errors() == []

        # -- kill -9: the last will makes every entity unavailable -------------------------------------
        daemon.kill()
        everything = [entity for entity in READINGS + DIAGNOSTICS if not entity.endswith("sees_paper")]
        everything.append(f"binary_sensor.{DEVICE}_sees_sheet")
        wait_states(home, everything, lambda state: state == "unavailable", 10)
    finally:
        daemon.kill()

    # -- the recorder: label and confidence follow the frames ----------------------------------------------
    since = datetime.now(timezone.utc).isoformat()
    replay = camera(copy, images, broker, "--once", "--emit", "every")
    try:
        assert replay.process.wait(timeout=120) == 0, "".join(replay.stderr)
    finally:
        replay.kill()
    results = replay.results()
    changes = [r["label"] for index, r in enumerate(results) if index == 0 or r["label"] != results[index - 1]["label"]]
    expected = ["uncertain" if label == "unknown" else label for label in changes]
    readings = {"unavailable", "unknown"}

    def recorded():
        found = [state for state in home.history(f"sensor.{DEVICE}_label", since) if state not in readings]
        return [state for index, state in enumerate(found) if index == 0 or state != found[index - 1]]
    assert wait_for(lambda: recorded() == expected, 15), (recorded(), expected)
    assert len(expected) >= 3
    confidences = [float(state) for state in home.history(f"sensor.{DEVICE}_confidence", since)
                   if state not in readings]
    published = {round(round(r["confidence"], 3) * 100, 1) for r in results}
    assert confidences and set(confidences) <= published
    assert len(set(confidences)) > len(expected)  # refreshed while the label stays, not only at each switch
    assert home.errors() == []

    # -- --ha-remove: the device and its entities are gone ---------------------------------------------------
    removed = subprocess.run([sys.executable, "-m", "device", "--bundle", str(copy), "--mqtt", broker.url,
                              "--name", NAME, "--ha-remove"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert removed.returncode == 0, removed.stderr
    assert wait_for(lambda: all(home.state(entity) is None for entity in everything), 15), states(home, everything)
    assert home.template("{{ device_id('sensor.%s_label') }}" % DEVICE) == "None"
    assert home.template("{{ integration_entities('mqtt') | list }}") == "[]"
    assert home.errors() == []
