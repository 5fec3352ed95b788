"""Regions in Home Assistant (issue 27): a real Home Assistant core (tests/home_assistant.py, a cached venv) on
the test's real Mosquitto and the real daemon with two regions: the camera stays one device with a label and a
confidence sensor per region, each showing its own region's reading, and a region renamed in the state folder
(as the Teach view saves it) is followed without a restart: the new name's sensors appear, the old ones go.
Skips (saying why) without mosquitto, without Python 3.11, or where Home Assistant cannot be installed."""

import pytest
import teach_bundle
from home_assistant import HomeAssistant, start_install
from outputs_helpers import Broker, Daemon, need_mosquitto, wait_for
from test_regions import photos, write_pairs

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]
start_install()
NAME = "Game camera"
DEVICE = "game_camera"


def test_one_device_with_a_label_and_confidence_sensor_per_region(tmp_path, tmp_path_factory):
    from device.regions import make_region, save_state

    need_mosquitto()
    found = photos(tmp_path_factory)
    write_pairs(tmp_path / "frames", [(("paper", found["paper"][0]), ("rock", found["rock"][0]))])
    state = tmp_path / "state"
    save_state(state, [make_region("left", [0, 0, 0.5, 1]), make_region("right", [0.5, 0, 0.5, 1])])
    broker = Broker(tmp_path / "broker")
    home = HomeAssistant(tmp_path / "ha", broker.port)
    daemon = Daemon("--bundle", teach_bundle.shared_teach_bundle(tmp_path_factory), "--source",
                    f"images:{tmp_path / 'frames'}", "--mqtt", broker.url, "--name", NAME, "--max-fps", "5",
                    "--state-dir", state, "--tune-seconds", "0", "--smoothing", "1", "--threshold", "0")
    try:
        entities = [f"sensor.{DEVICE}_{region}_{kind}" for region in ("left", "right")
                    for kind in ("label", "confidence")]
        assert wait_for(lambda: all((home.state(e) or {}).get("state") not in (None, "unavailable", "unknown")
                                    for e in entities), 90, 0.2), home.tail()
        assert home.state(f"sensor.{DEVICE}_left_label")["state"] == "paper"
        assert home.state(f"sensor.{DEVICE}_right_label")["state"] == "rock"
        assert 0 < float(home.state(f"sensor.{DEVICE}_left_confidence")["state"]) <= 100
        assert home.state(f"sensor.{DEVICE}_left_label")["attributes"]["friendly_name"] == f"{NAME} left label"
        device = home.template("{{ device_id('sensor.%s_label') }}" % DEVICE)
        listed = home.template("{{ device_entities('%s') | join(' ') }}" % device).split()
        assert set(entities) <= set(listed)  # the camera's own device, not one per region
        assert home.errors() == []

        started = daemon.status()["pid"]
        save_state(state, [make_region("player-1", [0, 0, 0.5, 1]), make_region("right", [0.5, 0, 0.5, 1])])
        assert wait_for(lambda: (home.state(f"sensor.{DEVICE}_player_1_label") or {}).get("state") == "paper",
                        30, 0.2), home.tail()
        assert wait_for(lambda: home.state(f"sensor.{DEVICE}_left_label") is None, 30, 0.2)
        assert daemon.status()["pid"] == started and [r["name"] for r in daemon.status()["regions"]] == \
            ["player-1", "right"]
        assert home.errors() == []
    finally:
        daemon.kill()
        home.stop()
        broker.stop()
