"""`make pi-sim`: the device archive in an emulated arm64 Debian bookworm userland (Python 3.11, apt's NumPy
1.24 and Pillow 9.4, the Pi requirements as aarch64 wheels) gives the same labels as on x86.

Needs qemu-user-static and debootstrap (scripts/system-deps.sh installs them) and reaches Debian's mirror and
PyPI the first time; the userland and wheels are cached in .pi-sim/ (about 40 s the first time, 15 s after).
EDGECAM_PI_SIM=0 skips it.
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

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_pi_sim_labels_equal_the_x86_labels(bundle, tmp_path):
    if os.environ.get("EDGECAM_PI_SIM") == "0":
        pytest.skip("EDGECAM_PI_SIM=0")
    missing = [tool for tool in ("qemu-aarch64-static", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: run `make system-deps` (apt: qemu-user-static debootstrap)")
    archive = tmp_path / "edgecam-device-tiny.tar.gz"
    subprocess.run([sys.executable, "-m", "deploy.bundle", "--bundle", str(bundle), "--out", str(archive)],
                   cwd=REPO, check=True, capture_output=True)
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
    assert summary["arm64_userland"].startswith("aarch64 Python 3.11") and "NumPy 1.24" in summary["arm64_userland"]
    assert "All required checks passed." in result.stdout
