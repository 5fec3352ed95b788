"""An output never takes the camera down (issue 25 item 2): a missing optional library or an unusable output
setting turns that output off, says so in /status, in the log (one line with the fix) and in `doctor`, and
the daemon goes on classifying.

Real daemon processes. "paho-mqtt is not installed" is made real for the child process: a sitecustomize
folder first on its PYTHONPATH installs an import hook that refuses ``paho``, so ``import paho.mqtt.client``
fails there as it does on a Pi without the package (nothing of the daemon is mocked)."""

from __future__ import annotations

import json
import subprocess
import sys

import device_bundle
import pytest
from outputs_helpers import REPO, Daemon

pytestmark = pytest.mark.timeout(120)

BLOCKER = '''
import sys

class RefusePaho:
    """As on a Pi without paho-mqtt: every import of paho fails."""
    def find_spec(self, name, path=None, target=None):
        if name == "paho" or name.startswith("paho."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, RefusePaho())
'''


@pytest.fixture(scope="module")
def images(bundle):
    return device_bundle.heldout(bundle)[0][1].parent.parent


@pytest.fixture()
def without_paho(tmp_path):
    folder = tmp_path / "no-paho"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(BLOCKER)
    return {"PYTHONPATH": f"{folder}:{REPO}"}


def test_the_blocker_really_hides_paho(without_paho):
    import os
    result = subprocess.run([sys.executable, "-c", "import paho.mqtt.client"], env=dict(os.environ, **without_paho),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "No module named 'paho'" in result.stderr


def test_mqtt_without_paho_disables_mqtt_and_the_camera_keeps_serving(bundle, images, without_paho):
    """It used to exit 2 at start, and the unit's RestartPreventExitStatus=2 kept the camera down."""
    daemon = Daemon("--bundle", bundle, "--source", f"images:{images}", "--max-fps", "20", "--emit", "change",
                    "--mqtt", "mqtt://127.0.0.1:1", env=without_paho)
    try:
        first = daemon.wait_status(lambda s: s["frames"] > 3, timeout=60)
        mqtt = first["outputs"]["mqtt"]
        assert mqtt["state"] == "disabled", mqtt
        assert "paho-mqtt" in mqtt["reason"] and "pip install" in mqtt["reason"]
        later = daemon.wait_status(lambda s: s["frames"] > first["frames"] + 5)  # still classifying
        assert later["state"] == "running" and later["outputs"]["stdout"]["state"] == "ok"
        lines = [line for line in daemon.stderr if "output mqtt is disabled" in line]
        assert len(lines) == 1 and "paho-mqtt" in lines[0], "".join(daemon.stderr)[-2000:]
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/metrics", timeout=5) as response:
            assert 'edgecam_output_up{output="mqtt"} 0' in response.read().decode()
        assert daemon.terminate() == 0
        assert "Traceback" not in "".join(daemon.stderr)
    finally:
        daemon.kill()


def test_unusable_output_settings_disable_those_outputs_only(bundle, images, tmp_path):
    """A malformed --mqtt URL, a wildcard topic and a webhook URL that is not http(s) used to exit 2."""
    daemon = Daemon("--bundle", bundle, "--source", f"images:{images}", "--max-fps", "20", "--emit", "off",
                    "--mqtt", "ftp://broker", "--webhook", "ftp://example/hook",
                    "--log-file", tmp_path / "no" / "such" / "folder" / "x.log")
    try:
        status = daemon.wait_status(lambda s: s["frames"] > 3, timeout=60)
        outputs = status["outputs"]
        assert {name: outputs[name]["state"] for name in ("mqtt", "webhook", "logfile")} == \
            {"mqtt": "disabled", "webhook": "disabled", "logfile": "disabled"}
        assert "expected mqtt://HOST" in outputs["mqtt"]["reason"]
        assert "expected an http:// or https:// URL" in outputs["webhook"]["reason"]
        assert "create its folder or make it writable" in outputs["logfile"]["reason"]
        assert status["state"] == "running"
        assert daemon.terminate() == 0
    finally:
        daemon.kill()


def test_doctor_names_a_disabled_output_and_the_fix(without_paho, tmp_path):
    import os
    environment = dict(os.environ, **without_paho, EDGECAM_MQTT="mqtt://homeassistant.local")
    result = subprocess.run([sys.executable, "-m", "device", "doctor", "--json", "--runtimes", "tflite_runtime",
                             "--log-dir", str(tmp_path)], env=environment, cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    report = json.loads(result.stdout)
    check = next(check for check in report["checks"] if check["name"] == "outputs")
    assert check["status"] == "warn" and "mqtt" in check["summary"] and "paho-mqtt" in check["summary"], check
    assert check["details"]["disabled"]["mqtt"].startswith("--mqtt needs paho-mqtt")
