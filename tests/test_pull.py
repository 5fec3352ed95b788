"""`make pull`: the device's dataset folder copied to this machine over a real OpenSSH server on a loopback port
(the ssh_server fixture of tests/test_deploy.py, as `make deploy` is tested), merging into a folder that
already holds files: nothing there is overwritten or deleted.

Nothing is faked but the Pi: "the device" is a folder on this machine reached through sshd as this user.
Also: the device archive that `make deploy` copies carries the Teach view.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import tarfile
from pathlib import Path

from test_deploy import archive, host_requirements, ssh_server, system_site  # noqa: F401 - `make deploy`'s fixtures

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_pull(destination: Path, device_dataset: Path, host: str, options: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("EDGECAM_", "MAKE"))}
    environment.update(EDGECAM_SSH_OPTS=options)
    command = ["make", "--no-print-directory", "-C", str(REPO), "pull", f"HOST={host}",
               f"PULL_DEST={destination}", f"DEVICE_DATASET={device_dataset}"]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=120, env=environment)


def pull_script(destination: Path, device_dataset: Path, host: str, options: str) -> subprocess.CompletedProcess:
    """deploy/pull.sh itself: make turns every failing recipe into its own exit status 2."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("EDGECAM_")}
    environment.update(EDGECAM_SSH_OPTS=options)
    command = ["bash", str(REPO / "deploy/pull.sh"), host, str(destination), str(device_dataset)]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=120, env=environment)


def tree(root: Path) -> dict:
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def device_dataset(root: Path) -> Path:
    """What a Pi's /var/lib/edgecam/dataset looks like after a few recordings."""
    files = {
        "paper/20261129-010203-0001.jpg": b"paper one",
        "paper/20261129-010203-0002.jpg": b"paper two (the device's)",
        "rock/20261129-010204-0003.jpg": b"rock three",
        "nothing/20261129-010205-0004.jpg": b"an empty table",
        "index.jsonl": b'{"file": "paper/20261129-010203-0001.jpg"}\n{"file": "rock/20261129-010204-0003.jpg"}\n',
        ".uncertain/frame-7.jpg": b"unlabelled: stays on the device",
        "rock/.20261129-010206-0005.jpg.tmp": b"half written",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_make_pull_merges_over_ssh_and_never_overwrites(ssh_server, tmp_path):  # noqa: F811
    host, options = ssh_server
    device = device_dataset(tmp_path / "device" / "dataset")
    destination = tmp_path / "host" / "data" / "tiny-own"
    (destination / "paper").mkdir(parents=True)
    (destination / "paper/20261129-010203-0002.jpg").write_bytes(b"my own, edited on the host")
    (destination / "paper/20261129-010203-0001.jpg").write_bytes(b"paper one")  # pulled before
    (destination / "index.jsonl").write_bytes(b'{"file": "paper/20261129-010203-0001.jpg"}\n')
    (destination / "notes.txt").write_bytes(b"only on the host")

    result = make_pull(destination, device, host, options)
    assert result.returncode == 0, result.stdout + result.stderr
    files = tree(destination)
    assert sorted(files) == sorted(["index.jsonl", "nothing/20261129-010205-0004.jpg", "notes.txt",
                             "paper/20261129-010203-0001.jpg", "paper/20261129-010203-0002.jpg",
                             "rock/20261129-010204-0003.jpg"])  # no hidden files, no staging folder left
    assert (destination / "rock/20261129-010204-0003.jpg").read_bytes() == b"rock three"
    assert (destination / "paper/20261129-010203-0002.jpg").read_bytes() == b"my own, edited on the host"
    assert (destination / "notes.txt").read_bytes() == b"only on the host"
    assert (destination / "index.jsonl").read_text().splitlines() == [
        '{"file": "paper/20261129-010203-0001.jpg"}', '{"file": "rock/20261129-010204-0003.jpg"}']
    assert "2 new file(s), 1 already here, 1 kept as they were, 1 index line(s) added" in result.stdout
    assert "kept " in result.stdout and "paper/20261129-010203-0002.jpg" in result.stdout
    assert "  rock: 1 images" in result.stdout
    assert tree(device) == tree(device_dataset(tmp_path / "again")), "the device's folder must not change"

    again = make_pull(destination, device, host, options)  # nothing new: nothing changes
    assert again.returncode == 0 and "0 new file(s)" in again.stdout
    assert tree(destination) == files


def test_make_pull_errors_say_what_to_do(ssh_server, tmp_path):  # noqa: F811
    host, options = ssh_server
    destination = tmp_path / "own"
    missing = pull_script(destination, tmp_path / "no-dataset-here", host, options)
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert "has no dataset folder" in missing.stderr and "record frames on the Teach view" in missing.stderr

    nobody = options.replace(options.split()[1], str(free_port()), 1)  # "-p PORT": nothing listens there
    unreachable = pull_script(destination, tmp_path, host, nobody)
    assert unreachable.returncode == 3, unreachable.stdout + unreachable.stderr
    assert f"could not reach {host} over ssh" in unreachable.stderr and "try again" in unreachable.stderr
    assert not any(destination.iterdir())  # nothing was copied, no staging folder left

    no_host = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "pull"], check=False,
                             capture_output=True, text=True, timeout=60)
    assert no_host.returncode == 2 and "make pull needs HOST=user@host" in no_host.stdout


def test_the_device_archive_carries_the_teach_view(archive):  # noqa: F811
    """What `make deploy` puts on the Pi serves /teach: the page's files travel inside device/."""
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {"device/teach/web.py", "device/teach/http.py", "device/teach/static/teach.html",
            "device/teach/static/teach.css"} <= names
    assert {f"device/teach/static/{name}.js" for name in ("teach-core", "teach-capture", "teach-grid",
                                                           "teach-uncertain", "teach-head", "teach", "regions")} <= names
