"""A real Home Assistant core for the tests: installed from PyPI into a cached venv of its own, configured
with the MQTT integration pointing at the test's Mosquitto, and read through its REST API.

- The venv: ~/.cache/edgecam/ha-venv-<version> ($EDGECAM_CACHE overrides ~/.cache/edgecam), built once with
  Python 3.11 (Home Assistant 2024.3 is the last release that runs on it) and the requirements of the
  integrations used here, so Home Assistant starts with --skip-pip and never installs anything itself.
  Without Python 3.11 or without the network the tests skip and say why.
- The MQTT integration has no YAML broker settings any more: its config entry is written into
  .storage/core.config_entries, as the UI would.
- A user made with ``hass --script auth``, then the login flow (/auth/login_flow, /auth/token) gives the
  access token for the REST API (/api/states, /api/template for the device registry, /api/history)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from outputs_helpers import free_port, wait_for

VERSION = "2024.3.3"
# homeassistant itself, josepy<2 (acme, which HA imports, breaks on josepy 2), and the pinned requirements of
# the integrations it sets up here: the ones it always loads (frontend, person, backup, ...: the frontend is
# critical, without it Home Assistant starts in recovery mode), and mqtt, recorder, history
REQUIREMENTS = [f"homeassistant=={VERSION}", "josepy<2", "paho-mqtt==1.6.1", "SQLAlchemy==2.0.27",
                "fnv-hash-fast==0.5.0", "psutil-home-assistant==0.0.1", "janus==1.0.0", "Pillow==10.2.0",
                "home-assistant-frontend==20240307.0", "ifaddr==0.2.0", "securetar==2024.2.1", "PyTurboJPEG==1.7.1",
                "numpy==1.26.0"]  # camera (MQTT's camera platform loads it)
CONSTRAINTS = Path(__file__).with_name("home_assistant_constraints.txt")  # every version pinned: no backtracking
CACHE = Path(os.environ.get("EDGECAM_CACHE") or Path.home() / ".cache" / "edgecam")
VENV = CACHE / f"ha-venv-{VERSION}"
INSTALL_TIMEOUT_S = 900
USER, PASSWORD = "edgecam-test", "a password only this test knows"


def python311() -> str | None:
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    return shutil.which("python3.11")


def install() -> str | None:
    """Build the venv unless it is there (one builder at a time: a lock file). None, or why it cannot be."""
    complete = VENV / ".edgecam-complete"
    if complete.exists():
        return None
    base = python311()
    if base is None:
        return f"Home Assistant {VERSION} needs Python 3.11 (python3.11 is not on PATH)"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "ha-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a builder already at work (start_install): wait for it
        if complete.exists():
            return None
        building = VENV.with_name(VENV.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        started = time.monotonic()
        subprocess.run([base, "-m", "venv", str(building)], check=True, capture_output=True, timeout=120)
        pip = subprocess.run([str(building / "bin" / "python"), "-m", "pip", "install", "-q", "-c",
                              str(CONSTRAINTS), *REQUIREMENTS], capture_output=True, text=True,
                             timeout=INSTALL_TIMEOUT_S)
        if pip.returncode != 0:
            shutil.rmtree(building, ignore_errors=True)
            said = [line for line in pip.stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
            return f"could not install Home Assistant {VERSION} from PyPI (no network?): {said[-1:]}"
        shutil.rmtree(VENV, ignore_errors=True)
        building.rename(VENV)  # the venv's scripts name their interpreter by path: fix them after the move
        for script in (VENV / "bin").iterdir():
            if script.is_file() and not script.is_symlink():
                text = script.read_bytes()
                if text.startswith(b"#!") and str(building).encode() in text:
                    script.write_bytes(text.replace(str(building).encode(), str(VENV).encode()))
        (VENV / "pyvenv.cfg").write_text((VENV / "pyvenv.cfg").read_text().replace(str(building), str(VENV)))
        complete.write_text(f"installed in {time.monotonic() - started:.0f} s\n")
    return None


def start_install() -> None:
    """Build the venv in a process of its own, now (at collection), so the install overlaps the tests that
    run before the Home Assistant test instead of adding its two or three minutes to the suite."""
    if (VENV / ".edgecam-complete").exists() or python311() is None:
        return
    subprocess.Popen([sys.executable, "-c", "import home_assistant; home_assistant.install()"],
                     cwd=Path(__file__).parent, env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent)),
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def home_assistant_python() -> Path:
    """The venv's python (waiting for, or doing, the install); skips the test with the reason it cannot."""
    reason = install()
    if reason:
        pytest.skip(reason)
    return VENV / "bin" / "python"


def config_entry(broker_port: int) -> dict:
    return {"version": 1, "minor_version": 1, "key": "core.config_entries", "data": {"entries": [{
        "entry_id": "edgecamtestmqttentry0000000001", "version": 1, "minor_version": 1, "domain": "mqtt",
        "title": "127.0.0.1", "data": {"broker": "127.0.0.1", "port": broker_port, "discovery": True},
        "options": {}, "pref_disable_new_entities": False, "pref_disable_polling": False, "source": "user",
        "unique_id": None, "disabled_by": None}]}}


class HomeAssistant:
    """``python -m homeassistant`` on a free loopback port, with MQTT, the recorder and the REST API."""

    def __init__(self, folder: Path, broker_port: int, extra: str = ""):
        """``extra``: more configuration.yaml (automations, helpers)."""
        self.python = home_assistant_python()
        self.folder = Path(folder)
        (self.folder / ".storage").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (self.folder / "configuration.yaml").write_text(f"""
homeassistant:
  name: edgecam test
  time_zone: UTC
  unit_system: metric
  latitude: 0
  longitude: 0
  elevation: 0
  currency: EUR
  country: DE
http:
  server_host: 127.0.0.1
  server_port: {self.port}
api:
auth:
recorder:
  commit_interval: 0
history:
logger:
  default: warning
""" + extra)
        (self.folder / ".storage" / "core.config_entries").write_text(json.dumps(config_entry(broker_port)))
        subprocess.run([str(self.python), "-m", "homeassistant", "--script", "auth", "-c", str(self.folder),
                        "add", USER, PASSWORD], check=True, capture_output=True, timeout=120)
        self.log = self.folder / "home-assistant.log"
        self.process = subprocess.Popen(
            [str(self.python), "-m", "homeassistant", "-c", str(self.folder), "--skip-pip", "--log-file",
             str(self.log)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.token = None
        assert wait_for(self.answers, 180, 0.5), f"Home Assistant did not start: {self.errors() or self.tail()}"
        self.token = self.login()
        assert wait_for(lambda: self.get("/api/config")["state"] == "RUNNING", 120, 0.5), self.tail()

    def answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"Home Assistant exited {self.process.returncode}: {self.tail()}")
        try:
            urllib.request.urlopen(f"{self.url}/api/", timeout=2)
        except urllib.error.HTTPError:
            return True  # 401: up, and wants a token
        except OSError:
            return False
        return True

    def request(self, path: str, body=None, form: dict | None = None):
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        data = None
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(f"{self.url}{path}", data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
        return text

    def get(self, path: str):
        return json.loads(self.request(path))

    def login(self) -> str:
        client = f"{self.url}/"
        flow = json.loads(self.request("/auth/login_flow", {"client_id": client, "handler": ["homeassistant", None],
                                                            "redirect_uri": client}))
        done = json.loads(self.request(f"/auth/login_flow/{flow['flow_id']}",
                                       {"client_id": client, "username": USER, "password": PASSWORD}))
        assert done["type"] == "create_entry", done
        token = json.loads(self.request("/auth/token", form={"grant_type": "authorization_code",
                                                              "code": done["result"], "client_id": client}))
        return token["access_token"]

    def state(self, entity_id: str) -> dict | None:
        try:
            return self.get(f"/api/states/{entity_id}")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    def template(self, text: str) -> str:
        return self.request("/api/template", {"template": text})

    def history(self, entity_id: str, since: str) -> list:
        found = self.get(f"/api/history/period/{urllib.parse.quote(since)}?filter_entity_id={entity_id}"
                         "&minimal_response&no_attributes")
        return [item["state"] for item in found[0]] if found else []

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def errors(self) -> list:
        """Lines Home Assistant logged at ERROR (a discovery config it refused, a template that failed)."""
        if not self.log.exists():
            return []
        return [line for line in self.log.read_text(errors="replace").splitlines() if " ERROR " in line]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
