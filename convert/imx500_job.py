"""Runs INSIDE the IMX500 toolchain venv (Python 3.11, TensorFlow 2.15 / Keras 2, MCT, imx500-converter), started
by convert/imx500.py as ``TOOLCHAIN/bin/python convert/imx500_job.py JOB_DIR``. It imports nothing of edgecam (the
host venv's TensorFlow 2.21 / Keras 3 cannot run MCT): the host side hands it everything in JOB_DIR:

  job.json         architecture (name, alpha, input size), classes, embedding layer, which images are which
  weights.npz      every layer's weights from the bundle's model.keras, keyed "LAYER/INDEX"
  calibration.npy  float32 [N, H, W, 3] 0..255, prepared by the device's own preprocessing
  heldout.npy      float32 [M, H, W, 3] 0..255, the held-out images as the device resizes them

Steps: rebuild the model for Keras 2 with two outputs (probabilities, embedding), load the weights, check the
rebuild equals the bundle's model on the held-out images (the host sends its float outputs), quantise with MCT
for the IMX500 target platform on the calibration images, export q.keras, run ``imxconv-tf`` (packerOut.zip
and the memory report), read the input/output quantisation from dnnParams.xml, and evaluate the fake-quantised
model on the held-out images expressed in the IMX500's input quantisation. Writes result.json and
outputs.npz (fake-quantised probabilities and embedding per held-out image) into JOB_DIR.
Exit 0 with result.json in every case the converter ran; a Python traceback otherwise (the host shows it).
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def log(text: str) -> None:
    print(f"imx500: {text}", file=sys.stderr, flush=True)


def build(job: dict):
    """The bundle's architecture rebuilt for Keras 2, ending in (probabilities, embedding)."""
    import tensorflow as tf

    layers = tf.keras.layers
    arch = job["architecture"]
    size, classes = job["input_size"], job["classes"]
    # The converter takes no Rescaling layer: the rebuild starts after it and the images are normalised before
    # they reach it (normalise(); on the Pi, the sensor's input stage per dnnParams.xml).
    inputs = tf.keras.Input(shape=(size[0], size[1], 3), dtype="float32", name="image")
    if arch["name"] in ("reference", "small"):
        filters, dense = ((64, 64, 128, 128), 512) if arch["name"] == "reference" else ((8, 16), 32)
        x = inputs
        for block, count in enumerate(filters):
            x = layers.Conv2D(count, 3, activation="relu", name=f"conv{block + 1}")(x)
            x = layers.MaxPooling2D(2, name=f"pool{block + 1}")(x)
        x = layers.Flatten(name="flatten")(x)
        embedding = layers.Dense(dense, activation="relu", name="dense")(x)  # taken after its ReLU
    elif arch["name"] == "mobilenet_v2":
        x = inputs
        backbone = tf.keras.applications.MobileNetV2(input_shape=(size[0], size[1], 3), alpha=arch["alpha"],
                                                     include_top=False, weights=None)
        embedding = layers.GlobalAveragePooling2D(name="embedding")(backbone(x))  # feeds the logits linearly
    else:
        raise SystemExit(f"imx500: architecture {arch['name']!r} is not rebuilt for the AI Camera")
    probabilities = layers.Dense(classes, activation="softmax", name=job["head_layer"])(embedding)
    return tf.keras.Model(inputs, [probabilities, embedding], name="edgecam_imx500")


REBUILD_TOLERANCE = 1e-3  # TensorFlow 2.15 vs 2.21 kernels differ by float rounding only
NORMALISATION = {"reference": (1.0 / 255, 0.0), "small": (1.0 / 255, 0.0), "mobilenet_v2": (1.0 / 127.5, -1.0)}


def normalise(images: np.ndarray, job: dict) -> np.ndarray:
    """0..255 -> what the network after the bundle's Rescaling layer takes."""
    scale, offset = NORMALISATION[job["architecture"]["name"]]
    return (images * np.float32(scale) + np.float32(offset)).astype(np.float32)


def leaf_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from leaf_layers(layer)
        else:
            yield layer


def load_weights(model, path: Path) -> int:
    stored = np.load(path)
    names = sorted({key.rsplit("/", 1)[0] for key in stored.files})
    by_name = {layer.name: layer for layer in leaf_layers(model)}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise SystemExit(f"imx500: the Keras 2 rebuild has no layer {missing[0]!r} ({len(missing)} missing)")
    for name in names:
        layer = by_name[name]
        count = len([key for key in stored.files if key.rsplit("/", 1)[0] == name])
        layer.set_weights([stored[f"{name}/{index}"] for index in range(count)])
    unset = [layer.name for layer in leaf_layers(model) if layer.weights and layer.name not in names]
    if unset:
        raise SystemExit(f"imx500: the bundle holds no weights for layer {unset[0]!r} of the rebuild")
    return len(names)


def dnn_params(packer_zip: Path) -> dict:
    """Input and output quantisation from dnnParams.xml inside packerOut.zip (scale, zero point, signedness)."""
    with zipfile.ZipFile(packer_zip) as archive:
        name = next((n for n in archive.namelist() if n.endswith("dnnParams.xml")), None)
        text = archive.read(name).decode("utf-8", "replace") if name else ""
    tensors = []
    for match in re.finditer(r"<(input|output)Tensor\b([^>]*)>", text):
        attributes = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        tensors.append({"kind": match.group(1), "name": attributes.get("name", ""),
                        "ordinal": int(attributes.get("ordinal", 0)), "bits": int(attributes.get("bitsPerElement", 8)),
                        "scale": float(attributes.get("scale", 0)), "shift": int(attributes.get("shift", 0)),
                        "signed": attributes.get("format") == "signed"})
    return {"tensors": tensors, "xml": text}


def on_input_grid(images: np.ndarray, tensor: dict) -> np.ndarray:
    """Normalised images as the sensor's 8-bit input tensor holds them: rounded to its scale, clipped to its range."""
    low, high = (-128, 127) if tensor["signed"] else (0, 255)
    return (np.clip(np.round(images / tensor["scale"]), low, high) * tensor["scale"]).astype(np.float32)


def main(job_dir: Path) -> None:
    import model_compression_toolkit as mct
    import tensorflow as tf

    started = time.monotonic()
    job = json.loads((job_dir / "job.json").read_text())
    model = build(job)
    loaded = load_weights(model, job_dir / "weights.npz")
    heldout = normalise(np.load(job_dir / "heldout.npy"), job)
    host = np.load(job_dir / "host_outputs.npz")
    rebuilt = model.predict(heldout, batch_size=64, verbose=0)
    rebuild_diff = float(np.max(np.abs(rebuilt[0] - host["probabilities"])))
    log(f"Keras 2 rebuild: {loaded} layers' weights loaded; max |p - p_bundle| {rebuild_diff:.2e} on "
        f"{len(heldout)} held-out images")
    if rebuild_diff > REBUILD_TOLERANCE:
        raise SystemExit(f"imx500: the Keras 2 rebuild of {job['architecture']['name']} differs from the bundle's "
                         f"model by {rebuild_diff:.3g} in probability (more than {REBUILD_TOLERANCE:g}): the "
                         "architecture or its weights did not carry over; nothing was converted")
    calibration = normalise(np.load(job_dir / "calibration.npy"), job)

    def representative():
        for start in range(0, len(calibration), 16):
            yield [calibration[start:start + 16]]

    tpc = mct.get_target_platform_capabilities("tensorflow", "imx500", target_platform_version="v1")
    quantised, _ = mct.ptq.keras_post_training_quantization(
        model, representative, target_platform_capabilities=tpc)
    q_path = job_dir / "q.keras"
    mct.exporter.keras_export_model(model=quantised, save_model_path=str(q_path))
    log(f"MCT {mct.__version__} post-training quantisation on {len(calibration)} calibration images "
        f"({time.monotonic() - started:.1f} s)")
    converter_started = time.monotonic()
    out = job_dir / "converter"
    done = subprocess.run([str(Path(sys.executable).parent / "imxconv-tf"), "-i", str(q_path), "-o", str(out),
                           "--overwrite-output"], capture_output=True, text=True)
    report_path = next(iter(glob.glob(str(out / "*MemoryReport.json"))), None)
    report = json.loads(Path(report_path).read_text()) if report_path else {}
    packer = out / "packerOut.zip"
    result = {"converter_returncode": done.returncode, "converter_log": (done.stdout + done.stderr)[-4000:],
              "memory_report": report, "packer_zip": str(packer) if packer.is_file() else "",
              "rebuild_max_abs_diff": rebuild_diff, "mct_version": mct.__version__,
              "tensorflow_version": tf.__version__, "converter_seconds": round(time.monotonic() - converter_started, 2)}
    log(f"imxconv-tf exit {done.returncode} ({result['converter_seconds']:.1f} s)")
    images = heldout
    if packer.is_file():
        params = dnn_params(packer)
        result["dnn_params"] = params["tensors"]
        (job_dir / "dnnParams.xml").write_text(params["xml"])
        # The fake-quantised model on the held-out images, as the device gives them to the sensor.
        images = on_input_grid(heldout, next(t for t in params["tensors"] if t["kind"] == "input"))
    result["normalisation"] = list(NORMALISATION[job["architecture"]["name"]])
    fake = quantised.predict(images, batch_size=64, verbose=0)
    np.savez(job_dir / "outputs.npz", probabilities=fake[0].astype(np.float32), embedding=fake[1].astype(np.float32))
    result["seconds"] = round(time.monotonic() - started, 2)
    (job_dir / "result.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
