"""device/runtime.py: the one loader. Real interpreters on a real converted bundle; only the Edge TPU
is faked (this machine has none: the test checks the clear error when its delegate cannot load)."""

import gc
import json
import shutil
import sys

import device_bundle
import numpy as np
import pytest

from device import runtime
from device.manifest import ManifestError


def test_parse_model_spec():
    assert runtime.parse_model_spec("int8") == runtime.ModelSpec("int8", None, None)
    assert runtime.parse_model_spec("edgetpu@usb:0") == runtime.ModelSpec("int8_edgetpu", None, "usb:0")
    spec = runtime.parse_model_spec("tflite/model_int8_edgetpu.tflite@pci:0")
    assert (spec.path, spec.device, spec.edgetpu) == ("tflite/model_int8_edgetpu.tflite", "pci:0", True)
    with pytest.raises(runtime.ModelError, match="not a model format"):
        runtime.parse_model_spec("int4")
    with pytest.raises(runtime.ModelError, match="usb, usb:N, pci or pci:N"):
        runtime.parse_model_spec("edgetpu@serial")
    with pytest.raises(runtime.ModelError, match="only applies to _edgetpu"):
        runtime.parse_model_spec("int8@usb:0")


@pytest.mark.parametrize("fmt, dtype", [("int8", np.int8), ("float32", np.float32)])
def test_load_model_from_bundle(bundle, fmt, dtype):
    model = runtime.load_model(fmt, bundle, threads=1)
    assert model.runtime == "ai_edge_litert" and model.verified and model.format == fmt
    assert (model.height, model.width) == (32, 32) and model.input_dtype == dtype
    output = model.run(np.zeros((1, 32, 32, 3), dtype))
    assert output.shape == (1, 3)
    if fmt == "int8":
        assert model.input_scale > 0 and model.output_scale > 0


def test_load_model_by_path_relative_to_bundle(bundle):
    model = runtime.load_model("tflite/model_float32.tflite", bundle)
    assert model.format == "float32" and model.verified


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_forced_runtime_tensorflow(bundle, monkeypatch):
    monkeypatch.setenv(runtime.RUNTIME_ENV, "tensorflow")
    model = runtime.load_model("int8", bundle)
    assert model.runtime == "tensorflow"


def test_forced_runtime_errors(bundle, monkeypatch):
    monkeypatch.setenv(runtime.RUNTIME_ENV, "onnx")
    with pytest.raises(runtime.ModelError, match="EDGECAM_RUNTIME='onnx' is not one of"):
        runtime.load_model("int8", bundle)
    monkeypatch.setenv(runtime.RUNTIME_ENV, "tflite_runtime")  # not installed in the main venv
    with pytest.raises(runtime.ModelError, match="pip install tflite-runtime"):
        runtime.import_runtime()


def test_no_interpreter_installed_says_what_to_install(monkeypatch):
    for name in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter",
                 "tensorflow"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: that import raises ImportError
    monkeypatch.delenv(runtime.RUNTIME_ENV, raising=False)
    with pytest.raises(runtime.ModelError, match="No TFLite interpreter is installed.*pip install ai-edge-litert"):
        runtime.import_runtime()


def test_sha256_mismatch_names_the_file_and_the_fix(bundle, tmp_path):
    copy = device_bundle.copy_bundle(bundle, tmp_path / "b")
    path = copy / "tflite" / "model_int8.tflite"
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(runtime.ModelError) as error:
        runtime.load_model("int8", copy)
    message = str(error.value)
    assert str(path) in message and "sha256" in message and "Copy the bundle again" in message


def test_missing_model_and_missing_format(bundle, tmp_path):
    copy = device_bundle.copy_bundle(bundle, tmp_path / "b")
    (copy / "tflite" / "model_int8.tflite").unlink()
    with pytest.raises(runtime.ModelError, match="does not exist. Convert the bundle"):
        runtime.load_model("int8", copy)
    with pytest.raises(runtime.ModelError, match="lists no float16 model .it has: float32, int8"):
        runtime.load_model("float16", copy)


def test_manifest_errors_name_the_file(bundle, tmp_path):
    copy = device_bundle.copy_bundle(bundle, tmp_path / "b")
    (copy / "manifest.json").write_text("{ not json")
    with pytest.raises(ManifestError, match="manifest.json is not valid JSON"):
        runtime.load_model("int8", copy)
    with pytest.raises(ManifestError, match="does not exist"):
        runtime.load_model("int8", tmp_path / "nowhere")


def test_model_and_manifest_disagree_on_input_size(bundle, tmp_path):
    copy = device_bundle.copy_bundle(bundle, tmp_path / "b")
    data = json.loads((copy / "manifest.json").read_text())
    data["input"]["height"] = 64
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(runtime.ModelError, match="different exports"):
        runtime.load_model("int8", copy)


def test_not_a_tflite_file(bundle, tmp_path):
    copy = device_bundle.copy_bundle(bundle, tmp_path / "b")
    garbage = copy / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(runtime.ModelError, match="cannot be loaded by ai_edge_litert"):
        runtime.load_model(str(garbage), copy)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # litert's half-built Delegate
def test_edgetpu_without_a_coral_gives_the_clear_error(bundle, tmp_path):
    """No Edge TPU exists on a build machine: libedgetpu.so.1 cannot load, so the loader must say so."""
    copy = device_bundle.copy_bundle(bundle, tmp_path / "b")
    shutil.copy(copy / "tflite" / "model_int8.tflite", copy / "tflite" / "model_int8_edgetpu.tflite")
    with pytest.raises(runtime.ModelError) as error:
        runtime.load_model("tflite/model_int8_edgetpu.tflite@usb:0", copy)
    assert str(error.value).startswith("No Edge TPU found at usb:0: plug one in or use --model int8")
    del error
    gc.collect()  # ai_edge_litert's failed Delegate complains when collected: let it happen here


def test_edgetpu_delegate_is_passed_to_the_interpreter(bundle):
    """A stand-in load_delegate (no Coral here) proves the delegate and device option reach the loader."""
    calls = []

    def fake_load_delegate(library, options):
        calls.append((library, options))
        return "delegate"

    assert runtime.edgetpu_delegate(fake_load_delegate, "pci:0") == "delegate"
    assert calls == [("libedgetpu.so.1", {"device": "pci:0"})]
