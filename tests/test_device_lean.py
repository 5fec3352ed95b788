"""Leanness: running the daemon never imports tensorflow, keras, train or convert (nor Pillow or OpenCV
unless its source needs them)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import device_bundle

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = ("tensorflow", "keras", "train", "convert", "tf_keras", "jax", "torch")

PROBE = """
import json, runpy, sys
sys.argv = ["device"] + json.loads(sys.argv[1])
code = 0
try:
    runpy.run_module("device", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code
roots = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"code": code, "modules": roots}), file=sys.stderr)
"""


def run_daemon_and_list_modules(arguments):
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps([str(a) for a in arguments])], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), check=False, capture_output=True, text=True,
                            timeout=60)
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"]), result.stdout


def test_daemon_never_imports_the_host_side(bundle):
    images = device_bundle.heldout(bundle)[0][1].parent.parent
    code, modules, stdout = run_daemon_and_list_modules(
        ["--bundle", bundle, "--source", f"images:{images}", "--once", "--max-fps", "0", "--http", "127.0.0.1:0"])
    assert code == 0 and stdout.count("\n") == 24
    assert "ai_edge_litert" in modules and "numpy" in modules and "PIL" in modules
    assert not modules & set(FORBIDDEN), sorted(modules & set(FORBIDDEN))
    assert "cv2" not in modules  # OpenCV only for opencv: sources
    assert "ssl" not in modules  # offline: http.client was imported without TLS (OpenSSL is ~5 MB of RSS)


def test_device_package_imports_stay_lean():
    code = ("import sys, device.cli, device.daemon, device.http.server, device.sources, device.runtime, device.outputs,"
            " device.opversions, device.teach.cli, device.teach.dataset, device.teach.evaluate, device.heads.head,"
            " device.teach.http, device.heads.store, device.teach.service, device.teach.teaching;"
            "[device.outputs.backend(name) for name in device.outputs.OUTPUTS];"
            "print(sorted({m.split('.')[0] for m in sys.modules}))")
    output = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), check=True).stdout
    # runtimes load in load_model, paho-mqtt in the MQTT output's open()
    for name in FORBIDDEN + ("PIL", "cv2", "ai_edge_litert", "paho"):
        assert f"'{name}'" not in output, name


def test_device_folder_alone_runs_the_daemon(bundle, tmp_path):
    """What a Pi gets: device/ copied next to a bundle, nothing else of the repo on the path."""
    import shutil

    shutil.copytree(REPO / "device", tmp_path / "device", ignore=shutil.ignore_patterns("__pycache__"))
    images = device_bundle.heldout(bundle)[0][1].parent.parent
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-m", "device", "--bundle", str(bundle), "--source", f"images:{images}",
                             "--once", "--http", "off", "--max-fps", "0"], cwd=tmp_path, env=environment,
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 24
    where = subprocess.run([sys.executable, "-c", "import device; print(device.__file__)"], cwd=tmp_path,
                           env=environment, check=True, capture_output=True, text=True).stdout
    assert where.startswith(str(tmp_path / "device")), where  # the copy ran, not the repo's device/


def test_teach_capture_and_evaluate_never_import_the_host_side(tmp_path_factory, tmp_path):
    """device/teach/ (capture, teach, evaluate) runs on the device: numpy, Pillow and the interpreter only."""
    import shutil

    import teach_bundle

    from bench.teach import light_copy

    bundle = light_copy(teach_bundle.shared_teach_bundle(tmp_path_factory), tmp_path / "bundle")
    images = teach_bundle.images_root(tmp_path_factory)
    data = shutil.copytree(images / "train", tmp_path / "data")
    for arguments in (["capture", "--bundle", bundle, "--source", f"images:{images / 'test' / 'rock'}", "--label",
                       "rock", "--count", "2", "--interval", "0", "--dataset", data, "--min-free-mb", "0"],
                      ["teach", "--bundle", bundle, "--data", data, "--threads", "1"],
                      ["evaluate", "--bundle", bundle, "--data", images / "test", "--out", tmp_path / "eval"]):
        code, modules, _ = run_daemon_and_list_modules(arguments)
        assert code == 0, arguments[0]
        assert "numpy" in modules and "PIL" in modules and "ai_edge_litert" in modules
        assert not modules & set(FORBIDDEN), (arguments[0], sorted(modules & set(FORBIDDEN)))
