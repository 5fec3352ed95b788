"""The installed device under a real systemd (tests/systemd_bed.py): the unit as install.sh writes it, on a
Debian trixie userland (Raspberry Pi OS today) booted with systemd as PID 1 in systemd-nspawn.

Real: systemd 257, the device archive, install.sh (venv, offline pip, device doctor, service user, unit,
restart, health check, rollback), the daemon, its HTTP API, the journal, cgroup memory limits. Faked, because
it cannot exist here: the Pi camera (frames replayed from /opt/frames) and the Pi's CPU (x86_64).
One container and one install serve every test here; each test puts back what it changed.
"""

from __future__ import annotations

import shutil
import time

import pytest
from systemd_bed import REPO, bed_share_fixture, box_fixture, build_archive  # noqa: F401 (fixtures)

UNIT = "edgecam.service"
DROP_IN = "/run/systemd/system/edgecam.service.d"


def main_pid(box) -> int:
    return int(box.show(UNIT, "MainPID")["MainPID"])


def restarts(box) -> int:
    return int(box.show(UNIT, "NRestarts")["NRestarts"])


def active_and_healthy(box) -> bool:
    return box.show(UNIT, "ActiveState")["ActiveState"] == "active" and box.healthy()


def release_of(box, link: str = "current") -> str:
    return box.run("readlink", f"/opt/edgecam/{link}").stdout.strip().rsplit("/", 1)[-1]


@pytest.fixture
def drop_in(box):
    """Write a drop-in for the unit (runtime only, /run); removed and the service restarted afterwards."""
    written = []

    def write(name: str, text: str) -> None:
        box.write(f"{DROP_IN}/{name}", text)
        written.append(name)
        box.run("systemctl", "daemon-reload")

    yield write
    for name in written:
        box.run("rm", "-f", f"{DROP_IN}/{name}")
    box.run("systemctl", "daemon-reload")
    box.run("systemctl", "reset-failed", UNIT, check=False)
    box.run("systemctl", "restart", UNIT)
    box.wait_for(lambda: active_and_healthy(box), 30, "edgecam back to active and healthy")


def test_the_service_is_notify_ready_and_healthy(box):
    unit = box.show(UNIT, "Type", "ActiveState", "SubState", "StatusText", "User", "WatchdogUSec", "MemoryMax")
    assert (unit["Type"], unit["ActiveState"], unit["SubState"]) == ("notify", "active", "running"), unit
    assert unit["StatusText"].split(",")[0] in ("starting", "running"), unit  # the daemon's own STATUS= lines
    assert unit["User"] == "edgecam" and unit["WatchdogUSec"] == "30s" and unit["MemoryMax"] == str(256 << 20)
    status, body = box.http("GET", "/healthz")
    assert status == 200, body
    status, body = box.http("GET", "/status")
    assert status == 200 and body["state"] == "running" and body["frames"] > 0, body
    assert body["model"]["format"] == "int8" and body["last_result"]["item"].startswith("/opt/frames/"), body
    assert body["release"] == release_of(box), body  # the release whose code runs (the fleet probe compares it)
    assert "serving" in box.journal()
    print(f"boot {box.boot_seconds:.2f} s, install {box.install_seconds:.1f} s")


def test_a_hung_daemon_is_restarted_by_the_watchdog(box, drop_in):
    # A hang as systemd sees one: the process is there but its inference loop pings WATCHDOG=1 no more.
    # SIGSTOP freezes it whole. WatchdogSec is shortened to 3 s for the test (a runtime drop-in); the rest
    # of the unit (TimeoutAbortSec from TimeoutStopSec=5, RestartSec=5) is as shipped.
    drop_in("watchdog.conf", "[Service]\nWatchdogSec=3\n")
    box.run("systemctl", "restart", UNIT)
    hung, before = main_pid(box), restarts(box)
    assert box.show(UNIT, "WatchdogUSec")["WatchdogUSec"] == "3s"
    time.sleep(4)  # the daemon pings every 1.5 s (half of WATCHDOG_USEC): it stays up while it pings
    assert main_pid(box) == hung and box.show(UNIT, "ActiveState")["ActiveState"] == "active"
    box.run("systemctl", "kill", "--kill-whom=main", "--signal=SIGSTOP", UNIT)
    started = time.monotonic()
    box.wait_for(lambda: main_pid(box) not in (0, hung) and active_and_healthy(box), 40,
                 "a new daemon after the watchdog fired")
    seconds = time.monotonic() - started
    assert restarts(box) == before + 1
    journal = box.journal()
    assert "Watchdog timeout" in journal, journal[-3000:]
    print(f"watchdog: frozen daemon replaced and healthy after {seconds:.1f} s (WatchdogSec=3, RestartSec=5)")


def test_exit_3_is_retried_and_exit_2_is_not(box):
    # Exit 3 (temporary): the HTTP port is held by another process, as at a boot where it is not free yet.
    box.run("systemctl", "stop", UNIT)
    box.run("systemd-run", "--unit=bed-port-holder", "python3", "-c",
            "import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
            "s.bind(('127.0.0.1', 8080)); s.listen(); "
            "open('/run/bed-port-held', 'w').close(); time.sleep(300)")
    try:
        box.wait_for(lambda: box.run("test", "-f", "/run/bed-port-held", check=False).returncode == 0, 10,
                     "the port holder listening")
        before, exits = restarts(box), box.journal().count("status=3/")
        box.run("systemctl", "start", "--no-block", UNIT)
        box.wait_for(lambda: restarts(box) >= before + 1, 30, "a restart after exit 3")
        journal = box.journal()
        assert journal.count("status=3/") > exits, journal[-3000:]  # "Main process exited, code=exited, status=3/..."
        assert "8080" in journal.split("status=3/")[-2][-2000:], journal[-3000:]  # the daemon said why
    finally:
        box.run("systemctl", "stop", "bed-port-holder.service")
        box.run("rm", "-f", "/run/bed-port-held")
    box.wait_for(lambda: active_and_healthy(box), 30, "active once the port is free")

    # Exit 2 (bad configuration): never retried; the unit stays failed until someone fixes it.
    original = box.run("cat", "/etc/default/edgecam").stdout
    box.write("/etc/default/edgecam", original.replace("--source images:", "--source nosuchsource:"), mode="0600")
    try:
        before = restarts(box)
        box.run("systemctl", "restart", UNIT, check=False)
        box.wait_for(lambda: box.show(UNIT, "ActiveState")["ActiveState"] == "failed", 30, "failed after exit 2")
        time.sleep(6)  # longer than RestartSec=5: a retry would have started by now
        unit = box.show(UNIT, "ActiveState", "ExecMainStatus", "NRestarts", "Result")
        assert (unit["ActiveState"], unit["ExecMainStatus"], unit["Result"]) == ("failed", "2", "exit-code"), unit
        assert int(unit["NRestarts"]) in (0, before), unit  # no automatic restart after the exit 2
    finally:
        box.write("/etc/default/edgecam", original, mode="0600")
        box.run("systemctl", "reset-failed", UNIT)
        box.run("systemctl", "restart", UNIT)
    box.wait_for(lambda: active_and_healthy(box), 30, "active again")


def test_a_release_that_fails_its_health_check_is_rolled_back(box, bed_share, tmp_path):
    share, releases, bundle = bed_share
    # A release with a bug: its device doctor passes, its daemon exits 1 before READY=1.
    code = tmp_path / "code"
    shutil.copytree(REPO / "device", code / "device", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "deploy", code / "deploy", ignore=shutil.ignore_patterns("__pycache__"))
    with open(code / "device" / "daemon.py", "a") as daemon:
        daemon.write("\n\ndef serve(options, stdout=None):  # the systemd bed's broken release\n    return 1\n")
    broken = build_archive(bundle, share / "broken.tar.gz", pythonpath=code)["id"]
    good = release_of(box)
    assert broken != good
    result = box.install("broken.tar.gz", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"the service did not start with {broken}; going back to {good}" in result.stderr
    # issue 26 item 5: the tuner never measures beside the running daemon (it holds the Edge TPU, loads the CPU)
    assert "stopping the running daemon while tuning" in result.stdout.split("device tune (which")[0], result.stdout
    assert (release_of(box), release_of(box, "previous")) == (good, broken)
    box.wait_for(lambda: active_and_healthy(box), 30, "the good release serving again")
    status, body = box.http("GET", "/status")
    assert status == 200 and body["model"]["format"] == "int8" and body["release"] == good, body
    # The failed release stays installed (inspectable), but it is no longer what runs.
    assert box.run("test", "-f", f"/opt/edgecam/releases/{broken}/.complete", check=False).returncode == 0


def writable_folders(box, pid: int) -> list:
    """Every folder the service's user can write in, as the service's own mount namespace shows the system
    (the API file systems /proc, /sys, /dev left out)."""
    find = ("find / \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -type d -writable -print "
            "2>/dev/null | sort")
    return box.run("nsenter", "-t", str(pid), "-m", "setpriv", "--reuid=edgecam", "--regid=edgecam",
                   "--init-groups", "/bin/sh", "-c", find, check=False).stdout.split()


def test_the_unit_may_write_only_its_state_and_log_folders(box):
    pid = main_pid(box)
    writable = writable_folders(box, pid)
    print(writable)
    tops = sorted({next((top for top in ("/var/lib/edgecam", "/var/log/edgecam", "/tmp", "/var/tmp")
                         if path == top or path.startswith(top + "/")), path) for path in writable})
    # PrivateTmp gives the service its own empty /tmp and /var/tmp, thrown away when it stops.
    assert tops == ["/tmp", "/var/lib/edgecam", "/var/log/edgecam", "/var/tmp"], writable
    # The same folders as root inside the service's namespace: the read-only mounts hold even for root.
    probe = ("for d in /opt/edgecam/current/bundle /opt/edgecam /etc /usr /var/lib/edgecam /var/log/edgecam; do "
             "if touch $d/.bed-probe 2>/dev/null; then rm -f $d/.bed-probe; echo $d writable; "
             "else echo $d read-only; fi; done")
    lines = box.run("nsenter", "-t", str(pid), "-m", "/bin/sh", "-c", probe).stdout.splitlines()
    assert lines == ["/opt/edgecam/current/bundle read-only", "/opt/edgecam read-only", "/etc read-only",
                     "/usr read-only", "/var/lib/edgecam writable", "/var/log/edgecam writable"], lines


MIB = 1 << 20
TEACH_UNIT = "bed-teach.service"


def teach_in_a_unit(box, memory_max: str) -> dict:
    """`python -m device teach` (the daemon's teach child, as the daemon runs it) in a transient unit with the
    service's user and MemoryMax, on a writable copy of the release's bundle; -> result, peak, exit."""
    script = ("set -e; rm -rf /var/lib/bed-teach && mkdir -p /var/lib/bed-teach && "
              "cp -r /opt/edgecam/current/bundle /var/lib/bed-teach/bundle && chown -R edgecam: /var/lib/bed-teach")
    box.sh(script)
    inner = ("/opt/edgecam/current/venv/bin/python -m device teach --bundle /var/lib/bed-teach/bundle "
             "--data /var/lib/edgecam/dataset --force --json --threads 1; code=$?; "
             "cat /sys/fs/cgroup/memory$(grep :memory: /proc/self/cgroup | cut -d: -f3)/memory.max_usage_in_bytes "
             ">/var/lib/bed-teach/peak; exit $code")
    done = box.run("systemd-run", f"--unit={TEACH_UNIT}", "--wait", "--pipe", "--quiet", "--collect",
                   "-p", "User=edgecam", "-p", f"MemoryMax={memory_max}", "-p", "MemorySwapMax=0",
                   "/bin/sh", "-c", inner, check=False, timeout=180)
    peak = box.run("cat", "/var/lib/bed-teach/peak", check=False).stdout.strip()
    return {"code": done.returncode, "stdout": done.stdout, "stderr": done.stderr,
            "peak": int(peak) if peak else None}


def capture(box, label: str, count: int) -> None:
    """Record COUNT frames of the replayed source as LABEL through the Teach view's API (the class made first)."""
    status, body = box.http("GET", "/api/dataset")
    if label not in [entry.get("name", entry) if isinstance(entry, dict) else entry for entry in body["classes"]]:
        status, body = box.http("POST", "/api/classes", {"name": label})
        assert status == 200, body
    for _ in range(count):
        status, body = box.http("POST", "/api/capture", {"label": label})
        assert status == 200, body
        time.sleep(0.25)  # the Teach view records at most --capture-fps frames a second


def test_memory_max_holds_with_a_teach_running(box):
    unit = box.memory()
    assert unit["limit"] == 256 * MIB, unit  # MemoryMax=256M is a real cgroup limit here, not a property
    for label in ("paper", "rock", "scissors"):
        capture(box, label, 6)
    taught = teach_in_a_unit(box, "256M")
    assert taught["code"] == 0, taught
    assert taught["peak"] < 256 * MIB
    # The limit is enforced: the same teach under a limit below its peak is killed by the kernel.
    starved = teach_in_a_unit(box, f"{max(taught['peak'] // 3, 8 * MIB)}")
    assert starved["code"] == 128 + 9, starved  # the teach child SIGKILLed by the kernel's OOM killer
    daemon = box.memory()
    assert daemon["peak"] < 256 * MIB and daemon["failcnt"] == 0, daemon
    print(f"memory peaks (cgroup memory.max_usage_in_bytes): daemon {daemon['peak'] / MIB:.1f} MiB, "
          f"teach child alone {taught['peak'] / MIB:.1f} MiB, limit 256 MiB")
