"""device/notify.py (sd_notify over real AF_UNIX datagram sockets, path and abstract) and the unit file."""

import configparser
import os
import socket
import uuid
from pathlib import Path

from device.notify import Notifier

UNIT = Path(__file__).resolve().parent.parent / "device" / "systemd" / "edgecam.service"


def test_notify_over_a_path_socket(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(path)
        receiver.settimeout(2)
        notifier = Notifier({"NOTIFY_SOCKET": path})
        assert notifier.enabled and notifier.ready("serving int8")
        assert receiver.recv(1024) == b"READY=1\nSTATUS=serving int8"
        assert notifier.watchdog() and receiver.recv(1024) == b"WATCHDOG=1"
        assert notifier.stopping() and receiver.recv(1024) == b"STOPPING=1"
        notifier.close()


def test_notify_over_an_abstract_socket():
    name = f"edgecam-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(2)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.reloading() and receiver.recv(1024) == b"RELOADING=1"
        notifier.close()


def test_without_systemd_every_call_is_a_quiet_no_op(tmp_path):
    assert not Notifier({}).ready()
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert gone.enabled and not gone.watchdog()  # an error, never an exception


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process():
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({}).watchdog_interval is None


def test_unit_file_is_notify_with_watchdog_restart_reload_and_hardening():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read_string(UNIT.read_text().replace("\\\n", " "))
    service = unit["Service"]
    assert service["Type"] == "notify" and int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure" and service["RestartPreventExitStatus"] == "2"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert "-m device --bundle" in service["ExecStart"]
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["User"] and "/var/log/edgecam" in service["ReadWritePaths"]
    assert "/var/log/edgecam/" in service["ExecStart"]
    assert service["StateDirectory"] == "edgecam"  # /var/lib/edgecam/dataset: the Teach view's frames
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    import shutil
    import subprocess

    import pytest

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    copy = tmp_path / "edgecam.service"
    copy.write_text(UNIT.read_text())
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], check=False, capture_output=True, text=True, timeout=30)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if line.strip() and "is not executable" not in line  # /opt/edgecam exists only on the Pi
                and "Failed to" not in line]  # no systemd running (container): cannot load dependencies
    assert not problems, problems
