"""The runtime version guard: convert/ records each model's ops and op versions and the lowest runtimes that
run them; the daemon and the doctor compare them with the runtime they load and refuse (exit 2) naming the
op, the versions and the fix, instead of the interpreter's opcode error; --target-runtime tflite-runtime-2.14
makes a model that runtime runs. Real conversions of the tiny trained bundle, the real ai-edge-litert, and the
real tflite-runtime 2.14 (numpy<2) in .venv-tflite when `make compat` / tests/test_device_compat.py made it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, copy_bundle

from device.opversions import MAX_OP_VERSIONS, explain_opcode_error, limits_for, lowest_runtimes, unsupported

TFLITE_PYTHON = REPO / ".venv-tflite" / "bin" / "python"
FC_ON_2_14 = MAX_OP_VERSIONS["tflite_runtime"]["2.14"]["FULLY_CONNECTED"]


@pytest.fixture(scope="module")
def converted(tiny_bundle, tiny_data_dir, tmp_path_factory) -> Path:
    """The tiny bundle converted as a user would, for the newest runtime (the default, --target-runtime latest)."""
    from convert.api import convert_bundle

    out = copy_bundle(tiny_bundle, tmp_path_factory.mktemp("opguard") / "latest")
    convert_bundle(out, formats="float32,dynamic", skip_parity=True, progress=False, log=lambda line: None)
    return out


def manifest_models(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())["models"]


def run_device(bundle: Path, model: str, *extra, python=sys.executable, env=None):
    return subprocess.run([str(python), "-m", "device", *extra, "--bundle", str(bundle), "--model", model],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                          capture_output=True, text=True, timeout=180)


def test_the_converter_records_ops_versions_and_lowest_runtimes(converted):
    from convert.readiness import op_versions

    models = manifest_models(converted)
    for fmt in ("float32", "dynamic"):
        assert models[fmt]["ops"] == op_versions(converted / models[fmt]["file"])
        assert {"CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= set(models[fmt]["ops"])
    assert models["float32"]["min_runtimes"] == {"ai_edge_litert": "2.3", "tflite_runtime": "2.14"}
    # TensorFlow 2.21 quantizes dense weights per channel: a FULLY_CONNECTED version tflite-runtime 2.14 lacks.
    assert models["dynamic"]["ops"]["FULLY_CONNECTED"] > FC_ON_2_14
    assert models["dynamic"]["min_runtimes"] == {"ai_edge_litert": "2.3", "tflite_runtime": None}


def test_daemon_and_doctor_refuse_ops_newer_than_the_runtime_with_exit_2(converted, tiny_data_dir, tmp_path):
    bundle = copy_bundle(converted, tmp_path / "edited")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["models"]["float32"]["ops"]["FULLY_CONNECTED"] = 99  # as if converted by a far newer TensorFlow
    (bundle / "manifest.json").write_text(json.dumps(manifest))

    started = run_device(bundle, "float32", "--source", f"images:{tiny_data_dir / 'test'}", "--once", "--http", "off",
                         env={"EDGECAM_RUNTIME": "ai_edge_litert"})
    assert started.returncode == 2, started.stderr
    for text in ("model_float32.tflite needs op versions that ai-edge-litert 2.3", "FULLY_CONNECTED version 99",
                 "runs up to version 14", f"python -m convert {bundle} --target-runtime",
                 "pip install --upgrade ai-edge-litert"):
        assert text in started.stderr, started.stderr
    assert "Didn't find op" not in started.stderr

    doctor = subprocess.run([sys.executable, "-m", "device", "doctor", "--bundle", str(bundle), "--model", "float32",
                             "--runtimes", "ai_edge_litert", "--json", "--log-dir", str(tmp_path)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=180)
    assert doctor.returncode == 2, doctor.stdout + doctor.stderr
    check = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "model")
    assert check["status"] == "fail" and "FULLY_CONNECTED version 99" in check["summary"]
    assert "--target-runtime" in check["summary"] and check["details"]["refused"] == "op-versions"


def test_target_runtime_tflite_runtime_2_14_makes_a_model_it_runs(converted, tiny_data_dir, tmp_path):
    bundle = copy_bundle(converted, tmp_path / "for-2.14")
    result = subprocess.run([sys.executable, "-m", "convert", str(bundle), "--formats", "dynamic", "--skip-parity",
                             "--quiet", "--target-runtime", "tflite-runtime-2.14"], cwd=REPO,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr
    dynamic = manifest_models(bundle)["dynamic"]
    assert dynamic["ops"]["FULLY_CONNECTED"] <= FC_ON_2_14
    assert dynamic["min_runtimes"] == {"ai_edge_litert": "2.3", "tflite_runtime": "2.14"}
    if not TFLITE_PYTHON.exists():
        pytest.skip("no .venv-tflite here (make compat builds it): the converted ops were checked, not run on 2.14")
    images = f"images:{tiny_data_dir / 'test'}"
    refused = run_device(converted, "dynamic", "--source", images, "--once", "--http", "off", python=TFLITE_PYTHON)
    assert refused.returncode == 2 and "FULLY_CONNECTED version" in refused.stderr, refused.stderr
    assert "--target-runtime tflite-runtime-2.14" in refused.stderr
    runs = run_device(bundle, "dynamic", "--source", images, "--once", "--http", "off", "--max-fps", "0",
                      python=TFLITE_PYTHON)
    assert runs.returncode == 0, runs.stderr
    assert len(runs.stdout.splitlines()) == len(list((tiny_data_dir / "test").rglob("*.png")))


def test_bad_target_runtime_is_refused_with_the_choices():
    result = subprocess.run([sys.executable, "-m", "convert", "bundle", "--target-runtime", "tflite-runtime-2.9"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "latest" in result.stderr and "tflite-runtime-2.14" in result.stderr


def test_tables_bound_older_runtimes_and_leave_newer_ones_alone():
    assert limits_for("tflite_runtime", "2.13.0") == MAX_OP_VERSIONS["tflite_runtime"]["2.14"]
    assert limits_for("tflite_runtime", "2.99.0") is None and limits_for("tensorflow", "2.21.0") is None
    assert unsupported({"FULLY_CONNECTED": 12, "CONV_2D": 1, "NEW_OP": 5}, "tflite_runtime", "2.14.0") == [
        ("FULLY_CONNECTED", 12, FC_ON_2_14)]
    assert lowest_runtimes({"FULLY_CONNECTED": 12}) == {"ai_edge_litert": "2.3", "tflite_runtime": None}
    interpreter_error = ("Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'. An older version of "
                         "this builtin might be supported. Are you using an old TFLite binary with a newer model?")
    message = explain_opcode_error(interpreter_error, "model_dynamic.tflite", "tflite_runtime", "2.14.0", "b")
    assert "FULLY_CONNECTED version 12 (it runs up to version 10)" in message
    assert "python -m convert b --target-runtime tflite-runtime-2.14" in message


# ---- every offered architecture's ops are measured (issue 19 item 19) -----------------------------------
@pytest.fixture(scope="module")
def mobilenet(tiny_data_dir, tiny_calibration_dir, tmp_path_factory) -> Path:
    """MobileNetV2 alpha 0.35 at 32 px, random weights (--weights none), one head epoch, converted to float32,
    int8 as a user would: DEPTHWISE_CONV_2D, ADD, MEAN and more beside the reference CNN's ops."""
    from convert.api import convert_bundle
    from train.api import train_bundle

    out = tmp_path_factory.mktemp("opguard") / "mnv2"
    train_bundle(tiny_data_dir, out, model="mobilenet_v2", alpha=0.35, image_size=32, weights="none",
                 head_epochs=1, fine_tune_epochs=0, batch_size=32, seed=0, verbose=0)
    convert_bundle(out, formats="float32,int8", calibration_dir=tiny_calibration_dir, skip_parity=True,
                   progress=False, log=lambda line: None)
    return out


def test_a_mobilenet_bundle_has_every_op_measured_and_runs_where_its_manifest_says(mobilenet, tiny_data_dir):
    """The table used to know the reference CNN's 7 ops only, and a MobileNet bundle was recorded as fine on
    tflite-runtime 2.14 with most of its ops unchecked."""
    models = manifest_models(mobilenet)
    assert {"DEPTHWISE_CONV_2D", "ADD", "MEAN"} <= set(models["int8"]["ops"])
    for fmt in ("float32", "int8"):
        for runtime, versions in MAX_OP_VERSIONS.items():
            for version, limits in versions.items():
                assert set(models[fmt]["ops"]) <= set(limits), (fmt, runtime, version)
        assert models[fmt]["min_runtimes"] == lowest_runtimes(models[fmt]["ops"])
        assert "unknown" not in models[fmt]["min_runtimes"].values(), fmt
    assert models["int8"]["min_runtimes"] == {"ai_edge_litert": "2.3", "tflite_runtime": "2.14"}
    if not TFLITE_PYTHON.exists():
        pytest.skip("no .venv-tflite here (make compat builds it): the table was checked, the model not run on 2.14")
    runs = run_device(mobilenet, "int8", "--source", f"images:{tiny_data_dir / 'test'}", "--once", "--http", "off",
                      "--max-fps", "0", python=TFLITE_PYTHON)
    assert runs.returncode == 0, runs.stderr
    assert len(runs.stdout.splitlines()) == len(list((tiny_data_dir / "test").rglob("*.png")))


def test_an_op_the_table_has_not_measured_is_unknown_not_fine(mobilenet, converted, tmp_path, monkeypatch):
    from convert.api import convert_bundle
    from convert.errors import ConvertError

    ops = manifest_models(mobilenet)["int8"]["ops"]
    assert lowest_runtimes({**ops, "NEW_OP": 1}) == {"ai_edge_litert": "unknown", "tflite_runtime": "unknown"}
    assert lowest_runtimes({**ops, "NEW_OP": 1, "FULLY_CONNECTED": 99})["tflite_runtime"] is None  # known too new
    limits = {op: n for op, n in MAX_OP_VERSIONS["tflite_runtime"]["2.14"].items() if op != "MAX_POOL_2D"}
    monkeypatch.setitem(MAX_OP_VERSIONS["tflite_runtime"], "2.14", limits)  # as if it had not been measured
    bundle = copy_bundle(converted, tmp_path / "unmeasured")  # the small CNN: cheaper to convert than a MobileNet
    with pytest.raises(ConvertError, match=r"The float32 model uses MAX_POOL_2D, whose versions "
                                           r"device/opversions.py has not measured for tflite-runtime-2.14.*"
                                           r"make op-versions"):
        convert_bundle(bundle, formats="float32", skip_parity=True, progress=False, log=lambda line: None,
                       target_runtime="tflite-runtime-2.14")
    assert manifest_models(bundle)["float32"] == manifest_models(converted)["float32"]  # nothing written
