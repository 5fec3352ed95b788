"""The device's `edgecam` command (device/command.py), the parts that need no installed device: how it reads
the service's settings (/etc/default/edgecam as install.sh writes it), where it finds the service, and the
command line it runs as the service's user. The installed command itself runs in the systemd test bed
(tests/test_systemd_edgecam.py, tests/test_systemd_quickstart.py)."""

from __future__ import annotations

import argparse

import pytest

from device import command
from device.envfile import parse_assignments

ENV_FILE = '''# edgecam service environment (read by edgecam.service). Your own lines are kept across installs.
EDGECAM_ARGS="--source images:/opt/frames --http 0.0.0.0:8081 --max-fps 10"
EDGECAM_TOKEN=abcdefghijklmnopqrstuv
# EDGECAM_MQTT=mqtt://homeassistant.local:1883
EDGECAM_RUNTIME=ai_edge_litert
'''


def test_the_service_settings_are_read_as_systemd_reads_them():
    settings = parse_assignments(ENV_FILE)
    assert settings == {"EDGECAM_ARGS": "--source images:/opt/frames --http 0.0.0.0:8081 --max-fps 10",
                        "EDGECAM_TOKEN": "abcdefghijklmnopqrstuv", "EDGECAM_RUNTIME": "ai_edge_litert"}
    assert command.service_flag(settings, "--source") == "images:/opt/frames"
    assert command.http_address(settings) == ("0.0.0.0", 8081)
    assert command.http_address({}) == ("127.0.0.1", 8080)  # the daemon's default --http
    assert command.http_address({"EDGECAM_ARGS": "--http=off"}) == (None, None)
    assert command.http_address({"EDGECAM_ARGS": "--http [::1]:9000"}) == ("::1", 9000)
    assert command.http_address({"EDGECAM_HTTP": "0.0.0.0:8082"}) == ("0.0.0.0", 8082)  # the daemon's env default
    assert command.http_address({"EDGECAM_HTTP": "0.0.0.0:8082", "EDGECAM_ARGS": "--http 127.0.0.1:8083"}) == \
        ("127.0.0.1", 8083)  # the flag wins, as in the daemon


def test_the_teach_view_address_carries_the_token_and_the_host_names(monkeypatch):
    monkeypatch.setattr(command.socket, "gethostname", lambda: "kitchen")
    settings = parse_assignments(ENV_FILE)
    assert command.urls(settings) == ["http://kitchen.local:8081/teach?token=abcdefghijklmnopqrstuv",
                                      "http://kitchen:8081/teach?token=abcdefghijklmnopqrstuv"]
    assert command.urls({}) == ["http://127.0.0.1:8080/teach"]
    assert command.urls({"EDGECAM_ARGS": "--http off"}) == []


def test_commands_run_the_current_release_as_the_service_user_with_its_state_folder():
    args = argparse.Namespace(prefix="/opt/edgecam", user="edgecam", env_file="/etc/default/edgecam",
                              state_dir="/var/lib/edgecam", log_dir="/var/log/edgecam")
    setup = command.Setup(args)
    line = command.as_service_user(setup, parse_assignments(ENV_FILE),
                                   command.device_command(setup, "teach", ["--force"]))
    assert line[:4] == ["runuser", "-u", "edgecam", "--"]
    assert "EDGECAM_STATE_DIR=/var/lib/edgecam" in line and "EDGECAM_RUNTIME=ai_edge_litert" in line
    assert not any(word.startswith("EDGECAM_ARGS=") for word in line)  # the daemon's flags stay the daemon's
    assert line[line.index("/opt/edgecam/current/venv/bin/python"):] == [
        "/opt/edgecam/current/venv/bin/python", "-m", "device", "teach", "--bundle", "/opt/edgecam/current/bundle",
        "--data", "/var/lib/edgecam/dataset", "--force"]


def test_an_unknown_command_is_bad_input(capsys):
    with pytest.raises(SystemExit) as exit_info:
        command.main(["nosuchcommand"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err
