"""The Teach view from a laptop in one step (issue 25 item 4): ``python -m device token`` writes the LAN lines
of the service's settings file without losing its other lines and prints the addresses to open; the device's
own host names (``<host>``, ``.local``, ``.lan``, ...) pass the Host check, a foreign name still gets 403.

Real processes: the token command on a real file, the daemon serving real HTTP with the token it wrote."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import urllib.error
import urllib.request

import device_bundle
import pytest
from outputs_helpers import REPO, free_port, wait_for

from device import lan
from device.http.guard import default_allowed_hosts, host_allowed

pytestmark = pytest.mark.timeout(120)
HOST = socket.gethostname().split(".")[0].lower()


def token_command(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device", "token", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))


def get(url: str, host: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:  # not listening yet
        return 0


def test_token_writes_the_lan_lines_and_keeps_the_others(tmp_path):
    defaults = tmp_path / "edgecam"
    defaults.write_text('# my notes\nEDGECAM_ARGS="--source picamera2 --http=127.0.0.1:9000 --max-fps 5"\n'
                        "EDGECAM_MQTT=mqtt://homeassistant.local\nEDGECAM_RUNTIME=ai_edge_litert\n")
    defaults.chmod(0o640)
    first = token_command("--write-defaults", defaults)
    assert first.returncode == 0, first.stderr
    lines = defaults.read_text().splitlines()
    token = next(line.split("=", 1)[1] for line in lines if line.startswith("EDGECAM_TOKEN="))
    assert len(token) >= 32
    assert lines[:4] == ["# my notes", 'EDGECAM_ARGS="--source picamera2 --http 0.0.0.0:8080 --max-fps 5"',
                         "EDGECAM_MQTT=mqtt://homeassistant.local", "EDGECAM_RUNTIME=ai_edge_litert"]
    assert stat.S_IMODE(defaults.stat().st_mode) == 0o640
    assert sorted(path.name for path in tmp_path.iterdir()) == ["edgecam"]  # no temporary file left behind
    assert f"http://{HOST}.local:8080/teach?token={token}" in first.stdout
    assert "sudo systemctl restart edgecam" in first.stdout
    again = token_command("--write-defaults", defaults)  # idempotent: the token stays, open pages keep working
    assert again.returncode == 0 and f"token={token}" in again.stdout and "set nothing" in again.stdout
    rotated = token_command("--write-defaults", defaults, "--rotate")
    assert rotated.returncode == 0 and f"token={token}" not in rotated.stdout
    assert defaults.read_text().count("EDGECAM_TOKEN=") == 1


def test_token_with_a_file_it_cannot_write_exits_2_and_says_what_to_do(tmp_path):
    (tmp_path / "not-a-folder").write_text("")
    result = token_command("--write-defaults", tmp_path / "not-a-folder" / "edgecam")
    assert result.returncode == 2 and "is a file, not a folder" in result.stderr and "sudo" in result.stderr
    assert result.stdout == ""


def test_urls_name_the_host_and_each_address():
    assert lan.urls("0.0.0.0:8080", "T" * 32, "kitchenpi", ["192.168.1.20"]) == [
        f"http://kitchenpi.local:8080/teach?token={'T' * 32}", f"http://192.168.1.20:8080/teach?token={'T' * 32}"]
    assert lan.urls("192.168.1.20:80", "x" * 20, "pi", []) == [f"http://192.168.1.20:80/teach?token={'x' * 20}"]


def test_the_devices_own_host_names_pass_the_host_check():
    allowed = default_allowed_hosts("0.0.0.0")
    for name in (HOST, f"{HOST}.local", f"{HOST}.lan", f"{HOST}.home.arpa", f"{HOST.upper()}.LAN."):
        assert host_allowed(f"{name}:8080", allowed), name
    for foreign in ("attacker.example", f"{HOST}.lan.attacker.example", f"{HOST}x.lan", "lan"):
        assert not host_allowed(f"{foreign}:8080", allowed), foreign


def test_the_written_settings_serve_the_teach_view_on_the_devices_lan_name(bundle, tmp_path):
    """The daemon started as the unit starts it, from what `token --write-defaults` wrote ($EDGECAM_ARGS's
    words, $EDGECAM_TOKEN): the printed URL opens the Teach view; so does the device's `.lan` name (403
    before); a foreign Host is still refused, and so is a wrong token."""
    port = free_port()
    defaults = tmp_path / "edgecam"
    written = token_command("--write-defaults", defaults, "--http", f"127.0.0.1:{port}")
    assert written.returncode == 0, written.stderr
    settings = {key: lan.unquote(value) for key, value in map(lan.assignment, defaults.read_text().splitlines())
                if key}
    url = next(line.strip() for line in written.stdout.splitlines() if "/teach?token=" in line)
    token = settings["EDGECAM_TOKEN"]
    assert url == f"http://127.0.0.1:{port}/teach?token={token}"
    images = device_bundle.heldout(bundle)[0][1].parent.parent
    daemon = subprocess.Popen([sys.executable, "-m", "device", "--bundle", str(bundle), "--source", f"images:{images}",
                               "--max-fps", "5", "--emit", "off", "--state-dir", str(tmp_path / "state"),
                               *settings["EDGECAM_ARGS"].split()], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO), EDGECAM_TOKEN=token))
    try:
        assert wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz") in (200, 503), 60), daemon.stderr
        assert get(url) == 200
        assert get(url, f"{HOST}.lan:{port}") == 200  # 403 before: only <host> and <host>.local passed
        assert get(url, f"{HOST}.local:{port}") == 200
        assert get(url, f"rebind.attacker.example:{port}") == 403
        assert get(f"http://127.0.0.1:{port}/teach?token=wrong-token-of-enough-length") == 401
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def test_edgecam_http_sets_the_listening_address_and_a_flag_still_wins(monkeypatch):
    """A fleet's managed block sets EDGECAM_HTTP (deploy/ansible/settings.py); --http in EDGECAM_ARGS wins."""
    from device import cli

    monkeypatch.setenv("EDGECAM_HTTP", "0.0.0.0:8080")
    assert cli.build_parser().parse_args(["--bundle", "b"]).http == "0.0.0.0:8080"
    assert cli.build_parser().parse_args(["--bundle", "b", "--http", "127.0.0.1:9"]).http == "127.0.0.1:9"
    monkeypatch.delenv("EDGECAM_HTTP")
    assert cli.build_parser().parse_args(["--bundle", "b"]).http == "127.0.0.1:8080"
