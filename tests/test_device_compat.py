"""The daemon on tflite-runtime 2.14 with numpy<2, as on Raspberry Pi OS, in its own small virtual
environment (.venv-tflite, made once by scripts/tflite_runtime_compat.sh, no TensorFlow in it). Its results
must match the main environment's (ai-edge-litert, numpy 2) on the same bundle and images."""

import json
import os
import subprocess
import sys
from pathlib import Path

import device_bundle
import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "tflite_runtime_compat.sh"


def run_main_venv(bundle, images, model):
    output = subprocess.run(
        [sys.executable, "-m", "device", "--bundle", str(bundle), "--source", f"images:{images}", "--once",
         "--http", "off", "--max-fps", "0", "--smoothing", "1", "--model", model, "--threads", "1"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), check=False, capture_output=True, text=True, timeout=60)
    assert output.returncode == 0, output.stderr
    return [json.loads(line) for line in output.stdout.splitlines()]


@pytest.mark.parametrize("model", ["int8", "float32"])
def test_tflite_runtime_with_numpy1_gives_the_same_results(bundle, model):
    images = device_bundle.heldout(bundle)[0][1].parent.parent
    environment = dict(os.environ, PYTHON=os.environ.get("EDGECAM_COMPAT_PYTHON", sys.executable))
    environment.pop("PYTHONPATH", None)
    output = subprocess.run(["bash", str(SCRIPT), str(bundle), str(images), "--model", model, "--threads", "1"],
                            cwd=REPO, env=environment, check=False, capture_output=True, text=True, timeout=300)
    if output.returncode == 3:
        pytest.skip(f"no tflite-runtime environment could be made here: {output.stderr.strip().splitlines()[-1]}")
    assert output.returncode == 0, output.stderr
    assert "tflite-runtime 2.14.0, numpy 1." in output.stderr
    assert f"({model}, tflite_runtime)" in output.stderr
    compat = [json.loads(line) for line in output.stdout.splitlines()]
    main = run_main_venv(bundle, images, model)
    assert len(compat) == len(main) == 24
    assert [r["raw_label"] for r in compat] == [r["raw_label"] for r in main]
    for ours, theirs in zip(compat, main):
        for label, value in ours["probabilities"].items():
            assert abs(value - theirs["probabilities"][label]) <= 0.01
