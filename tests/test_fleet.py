"""`make fleet`: deploy/ansible/rollout.yml (through python -m deploy.fleet) against three real OpenSSH servers
on loopback ports, each host with its own staging root (install.sh --root) and its own daemon port.

Real: ansible-playbook, ssh, install.sh (venv, pip --no-index, device doctor), the daemon and its HTTP API,
the probe. Faked, because it cannot exist here: systemd. With --root, install.sh writes the unit but starts
nothing, so each host's `edgecam_restart_command` is SERVICE below, a stand-in for `systemctl restart
edgecam`: it stops the host's daemon and starts the rendered unit's ExecStart with the host's
/etc/default/edgecam, as systemd would.

The story: release A (every model) goes to pi-2, whose operator has set EDGECAM_ARGS="--model float32".
Release B ships int8 only. Rolled out to all three in batches of two (max fail 0%): pi-1 takes B; on pi-2
B's daemon cannot start, the health check fails and pi-2 goes back to A; the rollout stops after that
batch, so pi-3 is never touched. (pi-1 and pi-3 start empty only to keep the test short: installs cost.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import device_bundle
import pytest
from loopback_sshd import LoopbackSshd, free_port, keygen, require_openssh
from test_deploy import build_archive, links, stand_in_system_site  # noqa: F401 (the deploy tests' helpers)

REPO = Path(__file__).resolve().parent.parent
HOSTS = ("pi-1", "pi-2", "pi-3")
PI1_TOKEN = "fleet-token-of-pi-1-0123456789"


def host_script(name: str):
    """deploy/ansible/NAME.py as a module: it runs on the host as a script (standard library only)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"edgecam_fleet_{name}", REPO / "deploy" / "ansible" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


settings_py = host_script("settings")
probe_module = host_script("probe")

SERVICE = r"""#!/usr/bin/env bash
# Stand-in for `systemctl restart edgecam` (no systemd here): ROOT's daemon, from its rendered unit.
set -euo pipefail
root=$1
pidfile=$root/edgecam.pid
if [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
command=$(sed -n '/^ExecStart=/,/[^\\]$/p' "$root/etc/systemd/system/edgecam.service" | sed 's/^ExecStart=//; s/\\$//' | tr '\n' ' ')
set -a; . "$root/etc/default/edgecam"; set +a
eval "set -- $command"
cd "$root/opt/edgecam/current"
setsid "$@" </dev/null >>"$root/daemon.log" 2>&1 &
echo $! >"$pidfile"
"""


@pytest.fixture
def fleet(tmp_path, bundle):
    """Three loopback sshd hosts -> (inventory path, {host: (root, daemon port)}); their daemons are stopped after."""
    require_openssh()
    system_site = stand_in_system_site(tmp_path / "system-site" / "site-packages")
    client_key = keygen(tmp_path / "client_key")
    (tmp_path / "service.sh").write_text(SERVICE)
    images = device_bundle.heldout(bundle)[0][1].parent.parent
    hosts, lines = {}, ["[kiosks]"]
    servers = [LoopbackSshd(tmp_path / name / "sshd", client_key, {"PYTHONPATH": system_site}) for name in HOSTS]
    try:
        for name, server in zip(HOSTS, servers):
            server.__enter__()
            root, port = tmp_path / name / "root", free_port()
            hosts[name] = (root, port)
            (root / "etc/default").mkdir(parents=True)
            model = " --model float32" if name == "pi-2" else ""
            own = (f'EDGECAM_ARGS="--source images:{images} --http 127.0.0.1:{port} --max-fps 2 --threads 1 '
                   f'--emit off{model}"\n')
            # pi-2 fails release B's health check on purpose (its daemon never answers): a short wait there; the
            # other hosts' daemons must come up in time even on a loaded 2-core machine (pi-1 once failed its rollout
            # with 12 s while the machine also trained a model)
            settings = " edgecam_health_timeout=20" if name == "pi-2" else ""
            if name == "pi-1":  # a block from an earlier rollout, edited by hand since, and a line of its own
                own = (f"{settings_py.BEGIN} (from the Ansible inventory: change it there; sha256 000000000000)\n"
                       f'EDGECAM_MQTT_TOPIC="edgecam/edited-by-hand"\n{settings_py.END}\n'
                       f'{own}EDGECAM_NAME="my own name"\n')
                settings += (f" edgecam_mqtt_topic=edgecam/pi-1/kitchen edgecam_name='kitchen camera' "
                            f"edgecam_token={PI1_TOKEN}")
            (root / "etc/default/edgecam").write_text(own)
            lines.append(f"{name} ansible_port={server.port} edgecam_root={root} edgecam_http=127.0.0.1:{port} "
                         f"edgecam_restart_command='bash {tmp_path / 'service.sh'} {root}'{settings}")
        lines += ["", "[kiosks:vars]", "ansible_host=127.0.0.1", f"ansible_user={servers[0].host.split('@')[0]}",
                  f"ansible_ssh_private_key_file={client_key}",
                  "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'",
                  f"ansible_python_interpreter={sys.executable}", f"edgecam_python={sys.executable}",
                  "edgecam_become=false", "edgecam_health_timeout=45",
                  f"edgecam_install_args='--python {sys.executable} --pip-args --no-index'", ""]
        inventory = tmp_path / "hosts.ini"
        inventory.write_text("\n".join(lines))
        yield inventory, hosts
    finally:
        for root, _ in hosts.values():
            if (root / "edgecam.pid").is_file():
                try:
                    os.kill(int((root / "edgecam.pid").read_text()), signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for server in servers:
            if server.process is not None:
                server.__exit__(None, None, None)


def run_fleet(inventory: Path, archive: Path, report: Path, *options) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("EDGECAM_", "ANSIBLE_"))}
    environment.update(ANSIBLE_HOME=str(report.parent / "ansible-home"), ANSIBLE_HOST_KEY_CHECKING="False",
                       ANSIBLE_LOCAL_TEMP=str(report.parent / "ansible-tmp"), ANSIBLE_NOCOLOR="1")
    command = [sys.executable, "-m", "deploy.fleet", "--inventory", str(inventory), "--archive", str(archive),
               "--report-dir", str(report), *map(str, options)]
    result = subprocess.run(command, cwd=REPO, env=environment, check=False, capture_output=True, text=True,
                            timeout=400)
    print(result.stdout[-6000:], result.stderr[-3000:])
    return result


def report_rows(report: Path) -> dict:
    return {row["host"]: row for row in json.loads((report / "report.json").read_text())["hosts"]}


def running_model(port: int, token: str | None = None) -> dict:
    from urllib.request import Request, urlopen

    request = Request(f"http://127.0.0.1:{port}/status", headers={"Authorization": f"Bearer {token}"} if token else {})
    with urlopen(request, timeout=5) as response:
        return json.loads(response.read())["model"]


def text_header(stdout: str) -> list:
    lines = stdout.splitlines()
    return lines[next(i for i, line in enumerate(lines) if line.startswith("edgecam fleet report")) + 1].split()


@pytest.mark.slow
def test_rollout_stops_at_a_failed_health_check_and_rolls_that_host_back(fleet, bundle, tmp_path):
    inventory, hosts = fleet
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy>=1.24\npillow>=9.4\n")  # the stand-in system site has them: no download
    release_a = build_archive(bundle, tmp_path / "a.tar.gz", "--requirements", requirements, "--models", "all")["id"]
    release_b = build_archive(bundle, tmp_path / "b.tar.gz", "--requirements", requirements,
                                 "--models", "int8")["id"]
    started = time.monotonic()

    # A to pi-2 alone (the others start empty: fewer installs, a faster test).
    first = run_fleet(inventory, tmp_path / "a.tar.gz", tmp_path / "report-a", "--limit", "pi-2")
    first_seconds = time.monotonic() - started
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert report_rows(tmp_path / "report-a")["pi-2"]["result"] == "updated"
    assert running_model(hosts["pi-2"][1])["format"] == "float32"

    second = run_fleet(inventory, tmp_path / "b.tar.gz", tmp_path / "report-b", "--serial", "2",
                       "--max-fail-percentage", "0")
    elapsed = time.monotonic() - started
    assert second.returncode == 1, second.stdout[-4000:] + second.stderr[-2000:]
    # The first batch (pi-1, pi-2): pi-1 carries B; pi-2 failed its health check and is back on A.
    assert links(hosts["pi-1"][0]) == {"current": f"releases/{release_b}", "previous": None}
    assert links(hosts["pi-2"][0]) == {"current": f"releases/{release_a}", "previous": f"releases/{release_b}"}
    # The batch stopped the rollout: pi-3 was never touched.
    assert links(hosts["pi-3"][0]) == {"current": None, "previous": None}
    assert not (hosts["pi-3"][0] / "opt/edgecam/releases").exists()

    manifest_a = json.loads((hosts["pi-2"][0] / f"opt/edgecam/releases/{release_a}/bundle/manifest.json").read_text())
    assert running_model(hosts["pi-2"][1])["sha256"] == manifest_a["models"]["float32"]["sha256"]
    manifest_b = json.loads((hosts["pi-1"][0] / f"opt/edgecam/releases/{release_b}/bundle/manifest.json").read_text())
    assert running_model(hosts["pi-1"][1], PI1_TOKEN)["sha256"] == manifest_b["models"]["int8"]["sha256"]

    rows = report_rows(tmp_path / "report-b")
    assert (rows["pi-1"]["result"], rows["pi-1"]["release"], rows["pi-1"]["model"]) == ("updated", release_b, "int8")
    # pi-1's settings came from the inventory, into the managed block; its own lines are as they were
    text = (hosts["pi-1"][0] / "etc/default/edgecam").read_text().splitlines()
    assert text[1:5] == ['EDGECAM_MQTT_TOPIC="edgecam/pi-1/kitchen"', 'EDGECAM_NAME="kitchen camera"',
                         f'EDGECAM_TOKEN="{PI1_TOKEN}"', settings_py.END], text
    assert text[0].startswith(settings_py.BEGIN) and text.count(settings_py.END) == 1
    assert text[5].startswith("EDGECAM_ARGS=") and 'EDGECAM_NAME="my own name"' in text
    assert "hand-edited fleet settings replaced: EDGECAM_MQTT_TOPIC" in rows["pi-1"]["note"]
    assert "EDGECAM_TOKEN" not in rows["pi-1"]["note"]  # new in the inventory: not a hand edit
    own_name = text.index('EDGECAM_NAME="my own name"') + 1
    assert (f"EDGECAM_NAME from the inventory does not apply: the host's own line (line {own_name} of "
            "/etc/default/edgecam)") in rows["pi-1"]["note"]
    assert PI1_TOKEN not in second.stdout + json.dumps(rows)  # the token never reaches the log or report
    from urllib.error import HTTPError
    from urllib.request import urlopen
    with pytest.raises(HTTPError) as refused:  # the daemon took the inventory's token (the probe sent it)
        urlopen(f"http://127.0.0.1:{hosts['pi-1'][1]}/status", timeout=5)
    assert refused.value.code == 401
    # the new columns: OS release, head revision, re-fit state, free disk
    assert rows["pi-1"]["os"] == probe_module.os_release() and rows["pi-1"]["head"] == "r0 bundle"
    assert rows["pi-1"]["refit"] == "-" and rows["pi-1"]["free"].endswith(" GB")
    assert "OS" in text_header(second.stdout) and "FREE" in text_header(second.stdout)
    assert (rows["pi-2"]["result"], rows["pi-2"]["release"], rows["pi-2"]["model"]) == ("rolled_back", release_a,
                                                                                        "float32")
    assert "/healthz" in rows["pi-2"]["note"] and f"back on {release_a}" in rows["pi-2"]["note"]
    assert (rows["pi-3"]["result"], rows["pi-3"]["release"]) == ("not_reached", "-")
    assert rows["pi-2"]["sha256"] == manifest_a["models"]["float32"]["sha256"][:12]
    text = second.stdout
    assert f"edgecam fleet report: release {release_b}" in text
    assert "1 updated, 1 rolled back, 1 not reached" in text
    print(f"rollout of A to one host: {first_seconds:.0f} s; of B to three, stopped after its first batch "
          f"of two: {elapsed - first_seconds:.0f} s")


def test_fleet_errors_name_the_fix(tmp_path):
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("pi-1 ansible_host=127.0.0.1\n")
    result = run_fleet(inventory, tmp_path / "missing.tar.gz", tmp_path / "report")
    assert result.returncode == 2 and "make bundle" in result.stderr
    result = run_fleet(tmp_path / "none.ini", tmp_path / "missing.tar.gz", tmp_path / "report")
    assert result.returncode == 2 and "inventory" in result.stderr and "does not exist" in result.stderr
    result = subprocess.run([sys.executable, "-m", "deploy.fleet", "--inventory", str(inventory), "--archive", "x",
                             "--serial", "0"], cwd=REPO, check=False, capture_output=True, text=True)
    assert result.returncode == 2 and "a number of hosts" in result.stderr


def test_an_unreachable_host_is_reported_and_exits_3(tmp_path):
    """No sshd on the port: the host is reported unreachable, the exit code says "retry later" (3)."""
    import io
    import tarfile

    archive = tmp_path / "edgecam-device-tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = json.dumps({"id": "tiny-000000000000", "models": ["int8"]}).encode()
        info = tarfile.TarInfo("edgecam-device-tiny/release.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(f"pi-gone ansible_host=127.0.0.1 ansible_port={free_port()} ansible_user=pi "
                         "ansible_ssh_common_args='-o ConnectTimeout=5 -o BatchMode=yes'\n")
    result = run_fleet(inventory, archive, tmp_path / "report")
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-2000:]
    row = report_rows(tmp_path / "report")["pi-gone"]
    assert row["result"] == "unreachable" and "run again later" in row["note"]
    assert "0 updated" not in result.stdout and "1 unreachable" in result.stdout


PROBE = REPO / "deploy" / "ansible" / "probe.py"


def stage_release(base: Path, release: str, bundle: Path) -> Path:
    """base/releases/RELEASE as install.sh lays one out (device/, bundle/, release.json), without the venv."""
    import shutil

    folder = base / "releases" / release
    shutil.copytree(REPO / "device", folder / "device", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(bundle, folder / "bundle", ignore=shutil.ignore_patterns("data", "saved_model", "*.keras"))
    (folder / "release.json").write_text(json.dumps({"id": release, "models": ["int8"]}))
    return folder


def point(base: Path, link: str, release: str) -> None:
    (base / f".{link}.new").symlink_to(f"releases/{release}")
    os.replace(base / f".{link}.new", base / link)


def probe(base: Path, port: int, release: str) -> dict:
    result = subprocess.run([sys.executable, str(PROBE), "--base", str(base), "--http", f"127.0.0.1:{port}",
                             "--release", release, "--wait", "5"], check=True, capture_output=True, text=True)
    return json.loads(result.stdout)


def test_the_probe_sees_a_daemon_that_did_not_restart_after_a_code_only_release(tmp_path, bundle):
    """Release B has the same model as A and other code. Installed without a restart, the old daemon still
    answers with B's model sha256: the probe must not call that host updated (issue 19 item 21)."""
    from loopback_sshd import free_port

    base = tmp_path / "opt" / "edgecam"
    stage_release(base, "tiny-aaaaaaaaaaaa", bundle)
    stage_release(base, "tiny-bbbbbbbbbbbb", bundle)
    point(base, "current", "tiny-aaaaaaaaaaaa")
    images = device_bundle.heldout(bundle)[0][1].parent.parent
    port = free_port()

    def start() -> subprocess.Popen:
        current = base / "current"  # as the unit runs it: PREFIX/current, the device package of that release
        return subprocess.Popen([sys.executable, "-m", "device", "--bundle", str(current / "bundle"), "--source",
                                 f"images:{images}", "--http", f"127.0.0.1:{port}", "--max-fps", "5", "--emit", "off",
                                 "--threads", "1"], cwd=current, env=dict(os.environ, PYTHONPATH=str(current)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    daemon = start()
    try:
        assert probe(base, port, "tiny-aaaaaaaaaaaa")["healthy"]
        time.sleep(1.1)  # the link below is set later than the daemon started, whatever the clock's resolution
        point(base, "previous", "tiny-aaaaaaaaaaaa")
        point(base, "current", "tiny-bbbbbbbbbbbb")  # install.sh's switch, and no restart
        stale = probe(base, port, "tiny-bbbbbbbbbbbb")
        assert not stale["healthy"], stale
        assert "tiny-aaaaaaaaaaaa" in stale["reason"] and "restart" in stale["reason"], stale
        daemon.terminate()
        daemon.wait(10)
        daemon = start()
        fresh = probe(base, port, "tiny-bbbbbbbbbbbb")
        assert fresh["healthy"], fresh
        assert fresh["daemon"]["release"] == "tiny-bbbbbbbbbbbb", fresh
        # what the fleet report shows beside it: OS release, head, re-fit state, free disk
        assert fresh["os"] and fresh["os"] == probe_module.os_release(), fresh
        assert fresh["head"]["revision"] == 0 and fresh["head"]["source"] == "bundle" and fresh["head"]["refit"] is None
        assert isinstance(fresh["free_bytes"], int) and fresh["free_bytes"] > 0
    finally:
        daemon.terminate()
        daemon.wait(10)


def test_the_report_shows_os_head_refit_and_free_disk_and_settings_notes():
    from deploy.fleet import format_report, host_rows

    state = {"release": "rps-1", "model": {"format": "int8", "sha256": "ab" * 32, "runtime": "ai_edge_litert"},
             "os": "Debian GNU/Linux 13 (trixie)", "free_bytes": 21_400_000_000,
             "head": {"revision": 3, "source": "taught", "refit": "done"}}
    settings = {"set": ["EDGECAM_HTTP", "EDGECAM_TOKEN"], "edited": ["EDGECAM_TOKEN"], "changed": True,
                "overridden": [{"key": "EDGECAM_HTTP", "line": 4, "flag": "--http in EDGECAM_ARGS"}]}
    rows = host_rows(["pi-1"], {("after", "pi-1"): {"result": "updated", "state": state},
                                ("settings", "pi-1"): {"settings": settings}})
    row = rows[0]
    assert (row["os"], row["head"], row["refit"], row["free"]) == ("Debian GNU/Linux 13 (trixie)", "r3 taught",
                                                                   "done", "21.4 GB")
    assert ("EDGECAM_HTTP from the inventory does not apply: the host's --http in EDGECAM_ARGS (line 4 of "
            "/etc/default/edgecam)") in row["note"]
    assert "hand-edited fleet settings replaced: EDGECAM_TOKEN" in row["note"]
    report = format_report("rps-1", rows).splitlines()
    assert report[1].split()[7:12] == ["OS", "HEAD", "REFIT", "FREE", "NOTE"]
    assert "Debian GNU/Linux 13 (trixie)  r3 taught  done   21.4 GB" in report[2]


def test_settings_go_into_one_managed_block_and_never_change_the_hosts_own_lines(tmp_path):
    path, values = tmp_path / "edgecam", tmp_path / "values.json"
    own = ['# my notes', 'EDGECAM_ARGS="--source picamera2 --http 127.0.0.1:8080"', "EDGECAM_RUNTIME=ai_edge_litert",
           "EDGECAM_MQTT_TOPIC=edgecam/mine"]
    path.write_text("\n".join(own) + "\n")
    path.chmod(0o640)

    def run(settings: dict) -> dict:
        values.write_text(json.dumps(settings))
        result = subprocess.run([sys.executable, str(REPO / "deploy/ansible/settings.py"), "--file", str(path),
                                 "--values", str(values)], capture_output=True, text=True, check=False)
        assert not values.exists()  # the token's file is gone once read
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    wanted = {"EDGECAM_MQTT_TOPIC": "edgecam/pi-7/rps", "EDGECAM_HTTP": "0.0.0.0:8080", "EDGECAM_TOKEN": "s" * 24,
              "EDGECAM_NAME": ""}
    first = run(wanted)
    lines = path.read_text().splitlines()
    assert lines[0].startswith(settings_py.BEGIN) and lines[4] == settings_py.END and lines[5:] == own
    assert first["changed"] and first["set"] == ["EDGECAM_HTTP", "EDGECAM_MQTT_TOPIC", "EDGECAM_TOKEN"]
    assert {(item["key"], item["line"]) for item in first["overridden"]} == {("EDGECAM_MQTT_TOPIC", 9),
                                                                          ("EDGECAM_HTTP", 7)}  # file lines
    assert lines[8] == "EDGECAM_MQTT_TOPIC=edgecam/mine" and lines[6].startswith("EDGECAM_ARGS=")
    assert "s" * 24 not in json.dumps(first) and oct(path.stat().st_mode & 0o777) == "0o640"
    assert run(wanted)["changed"] is False  # idempotent
    path.write_text(path.read_text().replace("0.0.0.0:8080", "0.0.0.0:9999"))  # a hand edit inside the block
    edited = run(wanted)
    assert edited["edited"] == ["EDGECAM_HTTP"] and "0.0.0.0:8080" in path.read_text()
    assert run({})["changed"] and path.read_text().splitlines() == own  # no settings left: the block goes
    values.write_text(json.dumps({"EDGECAM_NAME": 'say "hi"'}))
    bad = subprocess.run([sys.executable, str(REPO / "deploy/ansible/settings.py"), "--file", str(path), "--values",
                          str(values)], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "EDGECAM_NAME" in bad.stderr and path.read_text().splitlines() == own
