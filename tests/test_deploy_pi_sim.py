"""`make pi-sim WHEELS=1`: the device archive with its wheelhouse (deploy/wheelhouse.py) installs in an emulated
arm64 Debian trixie userland (Raspberry Pi OS today: Python 3.13, apt's NumPy 2.2 and Pillow 11) from its own
wheels with the network cut, and gives the same labels as on x86 (ai-edge-litert under qemu-user 10; the
7.2 of bookworm hosts crashes it, so pi_sim.sh fetches trixie's qemu-user). `make wheelhouse` reports which
armv7l wheels PyPI lacks; the requirements' markers pick per release.

Needs qemu-user-static and debootstrap (scripts/system-deps.sh installs them) and reaches Debian's mirror and
PyPI (pip download of the aarch64 wheels; the userland is cached in .pi-sim/). About 40 s the first time,
then about 30 s of it the emulated pip. EDGECAM_PI_SIM=0 skips them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import device_bundle
import pytest

from deploy import wheelhouse as wheelhouse_module

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "deploy" / "requirements-pi.txt"


def skip_without_pi_sim() -> None:
    if os.environ.get("EDGECAM_PI_SIM") == "0":
        pytest.skip("EDGECAM_PI_SIM=0")
    missing = [tool for tool in ("qemu-aarch64-static", "debootstrap", "unshare") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: run `make system-deps` (apt: qemu-user-static debootstrap)")


def wheelhouse(out: Path, *options) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "deploy.wheelhouse", "--out", str(out), *options], cwd=REPO,
                            check=False, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.slow
def test_pi_sim_installs_offline_and_its_labels_equal_the_x86_labels(bundle, tmp_path):
    skip_without_pi_sim()
    wheels = tmp_path / "wheelhouse"
    wheelhouse(wheels, "--platforms", "aarch64")
    archive = tmp_path / "edgecam-device-tiny.tar.gz"
    subprocess.run([sys.executable, "-m", "deploy.bundle", "--bundle", str(bundle), "--out", str(archive),
                    "--wheelhouse", str(wheels)], cwd=REPO, check=True, capture_output=True)
    images = device_bundle.heldout(bundle)[0][1].parent.parent
    environment = dict(os.environ, PY=sys.executable, EDGECAM_PI_SIM_RUN=str(tmp_path / "run"))
    result = subprocess.run(["bash", str(REPO / "deploy/pi_sim.sh"), str(archive), "--images", str(images),
                             "--count", "12"], cwd=REPO, env=environment, check=False, capture_output=True,
                            text=True, timeout=900)
    print(result.stdout[-4000:])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = json.loads((tmp_path / "run/result.json").read_text())
    assert summary["equal"] and summary["frames"] == 12 and summary["arm64_frames"] == 12
    assert summary["labels_arm64"] == summary["labels_x86"]
    assert summary["arm64_runtimes"][summary["arm64_runtime"]] == "ok"
    assert summary["arm64_userland"].startswith("aarch64 Python 3.13") and "NumPy 2.2" in summary["arm64_userland"]
    assert "All required checks passed." in result.stdout
    # Installed from the archive's wheels by the emulated pip, in a network namespace with no network;
    # apt's numpy and Pillow satisfied their requirements, so pip installed only the interpreter and paho-mqtt;
    # tflite-runtime has no CPython 3.13 wheel and its marker keeps it out.
    offline = summary["offline_install"]
    assert offline["network"].startswith("cut"), offline
    installed = {name.rsplit("-", 1)[0] for name in offline["installed"]}
    assert {"ai-edge-litert", "paho-mqtt"} <= installed and not {"numpy", "pillow", "tflite-runtime"} & installed, \
        installed


@pytest.mark.slow
def test_wheelhouse_reports_the_armv7l_wheels_pypi_lacks(tmp_path):
    skip_without_pi_sim()  # it reaches PyPI, as the emulated install's wheelhouse does
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy>=1.24,<2\ntflite-runtime==2.14.0\nai-edge-litert==2.3.0\n")
    result = wheelhouse(tmp_path / "wheels", "--requirements", str(requirements), "--platforms", "armv7l",
                        "--python-version", "3.11")
    report = json.loads((tmp_path / "wheels/wheelhouse.json").read_text())["platforms"]["armv7l"]
    assert report == {"complete": [], "without_dependencies": ["tflite-runtime==2.14.0"],
                      "missing": ["numpy>=1.24,<2", "ai-edge-litert==2.3.0"]}
    assert "no armv7l wheel on PyPI: numpy>=1.24,<2, ai-edge-litert==2.3.0" in result.stdout
    assert [path.name for path in (tmp_path / "wheels").glob("*.whl")] == \
        ["tflite_runtime-2.14.0-cp311-cp311-manylinux_2_34_armv7l.whl"]


def test_the_requirements_pick_per_release():
    """One requirements file for both Raspberry Pi OS releases: its markers, evaluated for each target."""
    trixie = wheelhouse_module.target_requirements(REQUIREMENTS, "3.13", "aarch64")
    bookworm = wheelhouse_module.target_requirements(REQUIREMENTS, "3.11", "aarch64")
    assert [line for line in trixie if line.startswith("numpy")] == ["numpy>=1.24"]  # apt's 2.2 is kept
    assert [line for line in bookworm if line.startswith("numpy")] == ["numpy>=1.24,<2"]  # for tflite-runtime
    assert "ai-edge-litert==2.3.0" in trixie and "ai-edge-litert==2.3.0" in bookworm
    assert "tflite-runtime==2.14.0" in bookworm and not any(line.startswith("tflite-runtime") for line in trixie)
    assert "paho-mqtt>=2" in trixie and "paho-mqtt>=2" in bookworm  # the MQTT output ships
