"""The device archive (deploy/bundle.py), its installer (install.sh: releases, idempotence, rollback) in a
temporary root, and `make deploy` over a real OpenSSH server on a loopback port.

Nothing is faked but the Pi: the installer builds a real venv with --system-site-packages and runs the real
pip step and `device doctor`. A folder of links to this venv's numpy, Pillow and ai-edge-litert (with its
dependencies) stands in for the Pi's system site-packages, put on PYTHONPATH, so pip finds every requirement
satisfied and never downloads (it runs with --no-index to make sure).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

import device_bundle
import pytest
from loopback_sshd import LoopbackSshd, keygen, require_openssh

REPO = Path(__file__).resolve().parent.parent
HOST_SIDE = ("train/", "convert/", "bench/", "tests/", "deploy/", "saved_model/", "model.keras", "checkpoints/",
             "heldout.txt", "history.csv", "logs/", "data/", "pyproject.toml", "Makefile")


# ---- fixtures ----------------------------------------------------------------------------
def stand_in_system_site(target: Path, roots=("numpy", "pillow", "ai-edge-litert")) -> Path:
    """Links to this venv's copies of ``roots`` and their dependencies, nothing else (no TensorFlow)."""
    from packaging.requirements import Requirement

    target.mkdir(parents=True, exist_ok=True)
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        dist = metadata.distribution(name)
        for top in {file.parts[0] for file in dist.files or () if file.parts[0] not in ("..", "__pycache__")}:
            link = target / top
            if not link.exists():
                link.symlink_to(Path(dist.locate_file(top)).resolve())
        for text in dist.requires or ():
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return target


@pytest.fixture(scope="session")
def system_site(tmp_path_factory) -> Path:
    return stand_in_system_site(tmp_path_factory.mktemp("system-site") / "site-packages")


@pytest.fixture(scope="session")
def host_requirements(tmp_path_factory) -> Path:
    """The device requirements as this machine satisfies them (the Pi's pins need NumPy 1.x and arm64)."""
    path = tmp_path_factory.mktemp("requirements") / "requirements.txt"
    path.write_text(f"numpy>=1.24\npillow>=9.4\nai-edge-litert=={metadata.version('ai-edge-litert')}\n")
    return path


def build_archive(bundle, out, *extra) -> dict:
    result = subprocess.run([sys.executable, "-m", "deploy.bundle", "--bundle", str(bundle), "--out", str(out),
                             *map(str, extra)], cwd=REPO, check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with tarfile.open(out) as tar:
        top = tar.getnames()[0]
        return json.loads(tar.extractfile(f"{top}/release.json").read())


def unpack(archive: Path, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
        top = tar.getnames()[0]
    return into / top


@pytest.fixture(scope="session")
def archive(bundle, host_requirements, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "edgecam-device-tiny.tar.gz"
    build_archive(bundle, out, "--requirements", host_requirements)
    return out


def make_wheelhouse(folder: Path) -> Path:
    """A wheelhouse with one tiny pure-Python wheel, as an offline Pi would get its wheels."""
    import base64
    import hashlib
    import zipfile

    folder.mkdir(parents=True)
    files = {"edgecam_offline_probe/__init__.py": b"",
             "edgecam_offline_probe-1.0.dist-info/METADATA":
                 b"Metadata-Version: 2.1\nName: edgecam-offline-probe\nVersion: 1.0\n",
             "edgecam_offline_probe-1.0.dist-info/WHEEL":
                 b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for name, data in files.items())
    files["edgecam_offline_probe-1.0.dist-info/RECORD"] = (record + "edgecam_offline_probe-1.0.dist-info/RECORD,,\n").encode()
    with zipfile.ZipFile(folder / "edgecam_offline_probe-1.0-py3-none-any.whl", "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
    return folder


def installer_environment(system_site: Path) -> dict:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("EDGECAM_", "NOTIFY_"))}
    environment["PYTHONPATH"] = str(system_site)
    return environment


def install(unpacked: Path, root: Path, system_site: Path, *options, check=True) -> subprocess.CompletedProcess:
    command = ["bash", str(unpacked / "install.sh"), "--root", str(root), "--python", sys.executable,
               "--pip-args", "--no-index", *map(str, options)]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300,
                            env=installer_environment(system_site))
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def links(root: Path) -> dict:
    base = root / "opt/edgecam"
    return {name: os.readlink(base / name) if (base / name).is_symlink() else None for name in ("current", "previous")}


def snapshot(root: Path) -> dict:
    """Every file and link under root except venvs and caches -> content hash / link target."""
    import hashlib

    state = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if "/venv/" in f"/{relative}/" or "__pycache__" in relative or relative.endswith(".install.lock"):
            continue
        if path.is_symlink():
            state[relative] = "-> " + os.readlink(path)
        elif path.is_file():
            state[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def volatile(state: dict) -> dict:
    """The doctor's report carries its time; everything else must not change on a second install."""
    return {key: value for key, value in state.items() if not key.endswith(("state/doctor.json", "state/runtime.json"))}


def exec_start(unit: Path) -> list:
    text = unit.read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    return shlex.split(line[len("ExecStart="):])


def environment_file(path: Path) -> dict:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key] = shlex.split(value)[0] if value else ""
    return values


# ---- the archive -------------------------------------------------------------------------
def test_archive_holds_the_device_side_only_and_stays_small(bundle, archive, tmp_path):
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        members = {member.name: member for member in tar.getmembers()}
    top = "edgecam-device-tiny"
    files = sorted(name[len(top) + 1:] for name in names if members[name].isfile())
    assert {"install.sh", "release.json", "requirements.txt", "bundle/manifest.json", "bundle/labels.txt",
            "bundle/tflite/model_int8.tflite", "device/__main__.py", "device/runtime.py", "device/doctor.py",
            "device/systemd/edgecam.service"} <= set(files)
    assert not [name for name in files if name.startswith(HOST_SIDE) or name.endswith((".pyc", ".keras"))], files
    assert all(name.startswith(f"{top}/") for name in names[1:])
    assert members[f"{top}/install.sh"].mode == 0o755
    manifest = json.loads(unpack(archive, tmp_path).joinpath("bundle/manifest.json").read_text())
    from device.manifest import load_manifest
    from device.tune import exclusions

    passed = {fmt for fmt, why in exclusions(load_manifest(bundle), edgetpu=True).items() if why is None}
    # int8 and every format whose parity passed (the device's tuner chooses among them); the device's manifest
    # lists only what it ships
    assert sorted(manifest["models"]) == sorted(passed | {"int8"})
    assert all(f"bundle/{entry['file']}" in files for entry in manifest["models"].values())
    model_bytes = sum(members[f"{top}/bundle/{entry['file']}"].size for entry in manifest["models"].values())
    assert archive.stat().st_size - model_bytes < 320 * 1024, "the archive without models must stay well under 1 MB"  # device/ alone: 226 KB gzipped (2026-12-06)


def test_by_default_every_format_whose_parity_passed_is_shipped_and_no_other(bundle, tmp_path):
    """The device's tuner chooses among the formats it has: the archive carries int8 and each format whose own
    parity passed, never one that failed (or was never measured)."""
    copy = Path(shutil.copytree(bundle, tmp_path / "bundle"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["parity"] = "passed"
    for float32, expected in (("passed", ["float32", "int8"]), ("failed", ["int8"]), ("skipped", ["int8"])):
        manifest["models"]["int8"]["parity"], manifest["models"]["float32"]["parity"] = "passed", float32
        (copy / "manifest.json").write_text(json.dumps(manifest))
        shipped = build_archive(copy, tmp_path / f"{float32}.tar.gz")["models"]
        assert sorted(shipped) == expected, (float32, shipped)


def test_archive_is_reproducible_and_carries_the_pi_requirements(bundle, tmp_path):
    first = build_archive(bundle, tmp_path / "a.tar.gz", "--models", "all")
    second = build_archive(bundle, tmp_path / "b.tar.gz", "--models", "all")
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    assert first["id"] == second["id"] and "float32" in first["models"]
    unpacked = unpack(tmp_path / "a.tar.gz", tmp_path / "a")
    assert (unpacked / "requirements.txt").read_text() == (REPO / "deploy/requirements-pi.txt").read_text()
    assert "tflite-runtime==2.14.0" in (unpacked / "requirements.txt").read_text()


def test_archive_errors_name_the_fix(bundle, tmp_path):
    result = subprocess.run([sys.executable, "-m", "deploy.bundle", "--bundle", str(tmp_path / "nothing"),
                             "--out", str(tmp_path / "x.tar.gz")], cwd=REPO, check=False, capture_output=True, text=True)
    assert result.returncode == 2 and "does not exist" in result.stderr
    result = subprocess.run([sys.executable, "-m", "deploy.bundle", "--bundle", str(bundle), "--models", "dynamic",
                             "--out", str(tmp_path / "x.tar.gz")], cwd=REPO, check=False, capture_output=True, text=True)
    assert result.returncode == 2 and "has no dynamic model" in result.stderr
    assert not (tmp_path / "x.tar.gz").exists()


# ---- install.sh --------------------------------------------------------------------------
def test_install_is_idempotent_and_rolls_back(bundle, archive, host_requirements, system_site, tmp_path):
    root = tmp_path / "root"
    first = unpack(archive, tmp_path / "first")
    release = json.loads((first / "release.json").read_text())["id"]
    done = install(first, root, system_site)
    assert links(root) == {"current": f"releases/{release}", "previous": None}
    # device tune ran after the doctor; this bundle's parity was never measured, so it only warns
    assert "device tune" in done.stdout and "warning: device tune failed" in done.stderr
    unit = root / "etc/systemd/system/edgecam.service"
    assert f"ExecStart={root}/opt/edgecam/current/venv/bin/python -m device --bundle {root}/opt/edgecam/current/bundle" \
        in unit.read_text()
    if shutil.which("systemd-analyze"):  # the rendered unit is valid and its ExecStart exists
        verify = subprocess.run(["systemd-analyze", "verify", str(unit)], check=False, capture_output=True, text=True)
        assert verify.returncode == 0, verify.stderr
    assert environment_file(root / "etc/default/edgecam")["EDGECAM_RUNTIME"] == "ai_edge_litert"
    venv_config = (root / "opt/edgecam/releases" / release / "venv/pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in venv_config
    shim = (root / "usr/local/bin/edgecam").read_text()  # the device's `edgecam` command (device/command.py)
    assert f"exec {root}/opt/edgecam/current/venv/bin/python -m device.command --prefix {root}/opt/edgecam " in shim
    assert (root / "usr/local/bin/edgecam").stat().st_mode & 0o777 == 0o755

    # The Teach view's dataset folder: made once, private to the service, outside every release.
    dataset = root / "var/lib/edgecam/dataset"
    assert dataset.is_dir() and (dataset.stat().st_mode & 0o777) == 0o750
    (dataset / "paper").mkdir()
    (dataset / "paper/20261129-010203-0001.jpg").write_bytes(b"a captured frame")

    before = snapshot(root)
    again = install(first, root, system_site)
    assert "already installed" in again.stdout
    assert volatile(snapshot(root)) == volatile(before)

    # The user's own settings survive an upgrade; the upgrade becomes current, the old release previous.
    env_file = root / "etc/default/edgecam"
    env_file.write_text(env_file.read_text().replace('EDGECAM_ARGS=""', 'EDGECAM_ARGS="--source opencv:0"'))
    # The upgrade ships a wheelhouse: pip installs from it alone (--no-index --find-links wheels/).
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(host_requirements.read_text() + "edgecam-offline-probe==1.0\n")
    second_archive = tmp_path / "second.tar.gz"
    second_release = build_archive(bundle, second_archive, "--requirements", requirements, "--models", "all",
                                   "--wheelhouse", make_wheelhouse(tmp_path / "wheels"))["id"]
    second = unpack(second_archive, tmp_path / "second")
    assert "offline install: 1 wheels in the archive" in install(second, root, system_site).stdout
    assert links(root) == {"current": f"releases/{second_release}", "previous": f"releases/{release}"}
    assert list((root / "opt/edgecam/current/venv/lib").glob("python3*/site-packages/edgecam_offline_probe"))
    assert environment_file(env_file) == {"EDGECAM_ARGS": "--source opencv:0", "EDGECAM_RUNTIME": "ai_edge_litert"}

    installed = root / "opt/edgecam/current/install.sh"
    rollback = install(installed.resolve().parent, root, system_site, "--rollback")
    assert "rolling back" in rollback.stdout
    assert links(root) == {"current": f"releases/{release}", "previous": f"releases/{second_release}"}
    install(installed.resolve().parent, root, system_site, "--rollback")
    assert links(root)["current"] == f"releases/{second_release}"
    status = install(first, root, system_site, "--status").stdout
    assert release in status and second_release in status
    assert f"dataset:  {dataset}\n" in status
    # Upgrades, rollbacks and pruning never touch the captured frames.
    assert (dataset / "paper/20261129-010203-0001.jpg").read_bytes() == b"a captured frame"


@pytest.fixture(scope="module")
def installed(archive, system_site, tmp_path_factory) -> tuple:
    """(root, release id) of one fresh install, shared by the tests below (the failed install leaves it as is)."""
    folder = tmp_path_factory.mktemp("installed")
    unpacked = unpack(archive, folder / "unpacked")
    install(unpacked, folder / "root", system_site)
    return folder / "root", json.loads((unpacked / "release.json").read_text())["id"]


def test_a_release_failing_the_doctor_never_becomes_current(installed, archive, system_site, tmp_path):
    root, release = installed
    before = snapshot(root)
    broken = unpack(archive, tmp_path / "broken")
    info = dict(json.loads((broken / "release.json").read_text()), id="tiny-corrupt")  # as a new archive's
    (broken / "release.json").write_text(json.dumps(info))
    (broken / "bundle/tflite/model_int8.tflite").write_bytes(b"not a model")
    result = install(broken, root, system_site, check=False)
    assert result.returncode != 0
    assert "does not match its sha256" in result.stdout and "current release is unchanged" in result.stderr
    assert links(root)["current"] == f"releases/{release}"
    assert not (root / "opt/edgecam/releases/tiny-corrupt").exists()
    assert snapshot(root) == before
    no_previous = install(broken, root, system_site, "--rollback", check=False)
    assert no_previous.returncode != 0 and "no previous release" in no_previous.stderr


def test_the_installed_service_command_runs_the_bundle(installed, bundle, system_site):
    root, _ = installed
    command = exec_start(root / "etc/systemd/system/edgecam.service")
    settings = environment_file(root / "etc/default/edgecam")
    command = [settings.get("EDGECAM_ARGS", "") if part == "$EDGECAM_ARGS" else part for part in command]
    images = device_bundle.heldout(bundle)[0][1].parent.parent
    command = [part for part in command if part] + ["--source", f"images:{images}", "--once", "--http", "off",
                                                   "--emit", "every", "--max-fps", "0"]
    environment = dict(installer_environment(system_site), **settings)
    result = subprocess.run(command, cwd=root / "opt/edgecam/current", env=environment, check=False, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    labels = [json.loads(line)["label"] for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(labels) == len(device_bundle.heldout(bundle))
    assert (root / "var/log/edgecam/edgecam.log").is_file()


# ---- make deploy over a real ssh server --------------------------------------------------
@pytest.fixture
def ssh_server(tmp_path, system_site):
    """sshd on a loopback port as the current user (tests/loopback_sshd.py). Its SetEnv gives sessions the
    stand-in system site-packages, as the Pi's system Python has numpy."""
    require_openssh()
    (tmp_path / "ssh").mkdir()
    client_key = keygen(tmp_path / "ssh" / "client_key")
    with LoopbackSshd(tmp_path / "ssh" / "server", client_key, {"PYTHONPATH": system_site}) as server:
        yield server.host, server.options


def test_make_deploy_over_ssh_installs_and_reinstalls(ssh_server, archive, tmp_path):
    host, options = ssh_server
    root = tmp_path / "device-root"
    environment = {key: value for key, value in os.environ.items() if not key.startswith("EDGECAM_")}
    environment.update(EDGECAM_SSH_OPTS=options, EDGECAM_SUDO="",
                       EDGECAM_INSTALL_ARGS=f"--root {root} --python {sys.executable} --pip-args --no-index")
    command = ["bash", str(REPO / "deploy/deploy.sh"), host, str(archive)]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stdout + result.stderr
    release = json.loads(unpack(archive, tmp_path / "a").joinpath("release.json").read_text())["id"]
    assert links(root)["current"] == f"releases/{release}"
    assert "All required checks passed." in result.stdout and "edgecam deploy: done" in result.stdout
    assert (root / "etc/systemd/system/edgecam.service").is_file()
    again = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, env=environment)
    assert again.returncode == 0 and "already installed" in again.stdout


def test_deploy_needs_a_host_and_an_archive(tmp_path):
    result = subprocess.run(["bash", str(REPO / "deploy/deploy.sh"), "pi@nowhere", str(tmp_path / "none.tar.gz")],
                            check=False, capture_output=True, text=True)
    assert result.returncode == 1 and "make bundle first" in result.stderr
    result = subprocess.run(["bash", str(REPO / "deploy/deploy.sh")], check=False, capture_output=True, text=True)
    assert result.returncode == 1 and "usage" in result.stderr
