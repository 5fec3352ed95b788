"""The installed device's own command and the Home Assistant steps, under a real systemd on Raspberry Pi OS's
userland of today (Debian trixie) in the systemd test bed (tests/systemd_bed.py).

Real: systemd, install.sh (which writes /usr/local/bin/edgecam), sudo and runuser, the daemon and its Teach API,
the teach child, journald, paho-mqtt from the archive's requirements, and a mosquitto broker (the host's binary
run in the container's network namespace, as the bed's HTTP client is). Faked, because it cannot exist here:
the camera (frames replayed from /opt/frames). One container serves every bed test; each test puts back what it
changed.
"""

from __future__ import annotations

import json
import subprocess

from outputs_helpers import MOSQUITTO
from systemd_bed import bed_share_fixture, box_fixture  # noqa: F401 (fixtures)
from test_systemd_service import UNIT, active_and_healthy, restarts

COMMAND = "/usr/local/bin/edgecam"
PI_SUDOERS = "pi ALL=(ALL) NOPASSWD: ALL\n"  # what Raspberry Pi OS writes for its first user (010_pi-nopasswd)


def as_pi(box, *command, check: bool = False, timeout: float = 180):
    """COMMAND as the Pi's ordinary user `pi` (created once, with Raspberry Pi OS's sudo rule)."""
    if box.run("id", "-u", "pi", check=False).returncode != 0:
        box.run("useradd", "--create-home", "--shell", "/bin/bash", "pi")
        box.write("/etc/sudoers.d/010_pi-nopasswd", PI_SUDOERS, mode="0440")
    return box.run("runuser", "-u", "pi", "--", *command, check=check, timeout=timeout,
                   environment={"HOME": "/home/pi"})


def dataset_classes(box) -> list:
    status, body = box.http("GET", "/api/dataset")
    assert status == 200, body
    return [entry.get("name", entry) if isinstance(entry, dict) else entry for entry in body["classes"]]


def labels_served(box) -> list:
    status, body = box.http("GET", "/status")
    assert status == 200, body
    return body["model"]["labels"]


def test_the_edgecam_command_runs_the_current_release_as_the_service_user(box):
    shim = box.run("cat", COMMAND).stdout
    assert box.run("test", "-x", COMMAND, check=False).returncode == 0
    assert "/opt/edgecam/current/venv/bin/python -m device.command" in shim, shim

    status = as_pi(box, "edgecam", "status", "--json")  # pi is not root: it goes through sudo
    assert status.returncode == 0, status.stderr
    head = json.loads(status.stdout.splitlines()[-1])
    assert head["bundle_head"] and "/var/lib/edgecam" in json.dumps(head), head  # the service's state folder

    doctor = as_pi(box, "edgecam", "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "Debian GNU/Linux 13 (trixie)" in doctor.stdout.splitlines()[0], doctor.stdout  # names the OS release

    # capture while the service holds the camera: through its Teach API, frames owned by the service's user
    shipped = labels_served(box)
    for label in ("cmd-a", "cmd-b"):
        captured = as_pi(box, "edgecam", "capture", "--label", label, "--count", "3", "--interval", "0.3")
        assert captured.returncode == 0, captured.stderr
        assert "through the running service" in captured.stderr, captured.stderr
        assert len(captured.stdout.splitlines()) == 3, captured.stdout
    assert {"cmd-a", "cmd-b"} <= set(dataset_classes(box))
    owners = box.sh("stat -c %U /var/lib/edgecam/dataset/cmd-a/* | sort -u").stdout.split()
    assert owners == ["edgecam"], owners
    try:
        # the service stopped: capture opens the service's --source itself, as the service's user
        box.run("systemctl", "stop", UNIT)
        direct = as_pi(box, "edgecam", "capture", "--label", "cmd-a", "--count", "2", "--interval", "0")
        assert direct.returncode == 0, direct.stderr
        assert "through the running service" not in direct.stderr, direct.stderr
        assert box.sh("ls /var/lib/edgecam/dataset/cmd-a | wc -l").stdout.strip() == "5"
        assert box.sh("stat -c %U /var/lib/edgecam/dataset/cmd-a/* | sort -u").stdout.split() == ["edgecam"]
        box.run("systemctl", "start", UNIT)
        box.wait_for(lambda: active_and_healthy(box), 30, "edgecam back after the direct capture")

        taught = as_pi(box, "edgecam", "teach", "--force", "--threads", "1")
        assert taught.returncode == 0, taught.stdout + taught.stderr
        box.wait_for(lambda: "cmd-a" in labels_served(box), 30, "the running service serving the taught head")
        assert "cmd-a" in json.loads(as_pi(box, "edgecam", "status", "--json").stdout.splitlines()[-1])["labels"]
    finally:
        undone = as_pi(box, "edgecam", "undo")
        box.wait_for(lambda: labels_served(box) == shipped, 30, "the shipped head serving after edgecam undo")
        for label in ("cmd-a", "cmd-b"):
            box.http("POST", "/api/classes/delete", {"name": label})
    assert undone.returncode == 0, undone.stderr

    url = as_pi(box, "edgecam", "url")
    assert url.returncode == 0 and url.stdout.strip() == "http://127.0.0.1:8080/teach", url
    logs = as_pi(box, "edgecam", "logs", "--no-pager", "--output=cat")
    assert logs.returncode == 0 and "serving" in logs.stdout, logs.stdout[-2000:]
    bad = as_pi(box, "edgecam", "nosuchcommand")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr, bad.stderr


def test_the_home_assistant_steps_keep_the_service_up_and_publishing(box, tmp_path):
    """README "Home Assistant": EDGECAM_MQTT in /etc/default/edgecam, restart. The broker listens on the
    container's loopback (the host's mosquitto in its network namespace)."""
    config = tmp_path / "mosquitto.conf"
    config.write_text("listener 1883 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n")
    enter = ["nsenter", "-t", str(box.pid), "-n"]
    broker = subprocess.Popen([*enter, MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    original = box.run("cat", "/etc/default/edgecam").stdout
    try:
        box.wait_for(lambda: box.run("bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/1883", check=False,
                                     timeout=5).returncode == 0, 10, "the broker listening")
        box.write("/etc/default/edgecam", original + "EDGECAM_MQTT=mqtt://127.0.0.1:1883\n", mode="0600")
        before = restarts(box)
        box.run("systemctl", "restart", UNIT)
        box.wait_for(lambda: active_and_healthy(box), 30, "edgecam active with EDGECAM_MQTT set")
        heard = subprocess.run([*enter, "mosquitto_sub", "-h", "127.0.0.1", "-v", "-t", "edgecam/#",
                                "-t", "homeassistant/#", "-C", "6", "-W", "30"],
                               capture_output=True, text=True, timeout=40, check=False)
        topics = dict(line.split(" ", 1) for line in heard.stdout.splitlines() if " " in line)
        assert any(topic.endswith("/availability") and payload == "online" for topic, payload in topics.items()), \
            heard.stdout + heard.stderr
        assert any(topic.startswith("homeassistant/") and topic.endswith("/config") for topic in topics), heard.stdout
        status, body = box.http("GET", "/status")
        assert status == 200 and body["state"] == "running", body
        assert restarts(box) == before and box.show(UNIT, "ActiveState")["ActiveState"] == "active"
    finally:
        box.write("/etc/default/edgecam", original, mode="0600")
        box.run("systemctl", "restart", UNIT)
        broker.terminate()
        broker.wait(10)
    box.wait_for(lambda: active_and_healthy(box), 30, "edgecam back without MQTT")
