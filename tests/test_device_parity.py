"""Preprocessing parity: on the bundle's held-out images, the device pipeline (the daemon as a real
subprocess, image-folder source, float32 model) gives the SavedModel's top-1 on at least 99% of images.
The SavedModel side uses TensorFlow's own decode-free path: the same RGB pixels resized by
tf.image.resize (the contract), so a drift in the numpy resize or colour order shows up here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import device_bundle
import numpy as np
from PIL import Image

from device.manifest import load_manifest

REPO = Path(__file__).resolve().parent.parent


def saved_model_top1(bundle: Path, paths: list) -> list:
    import tensorflow as tf

    manifest = load_manifest(bundle)
    serve = tf.saved_model.load(str(bundle / manifest.saved_model)).signatures["serving_default"]
    size = (manifest.input.height, manifest.input.width)
    labels = []
    for path in paths:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        batch = tf.image.resize(rgb[None].astype("float32"), size, method="bilinear", antialias=False)
        probabilities = next(iter(serve(batch).values())).numpy()[0]
        labels.append(manifest.labels[int(np.argmax(probabilities))])
    return labels


def daemon_top1(bundle: Path, folder: Path, model: str) -> list:
    output = subprocess.run(
        [sys.executable, "-m", "device", "--bundle", str(bundle), "--model", model, "--source", f"images:{folder}",
         "--once", "--max-fps", "0", "--smoothing", "1", "--threshold", "0", "--http", "off", "--threads", "1"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), check=False, capture_output=True, text=True, timeout=120)
    assert output.returncode == 0, output.stderr
    return [json.loads(line)["raw_label"] for line in output.stdout.splitlines()]


def test_device_pipeline_matches_the_saved_model_on_heldout_images(bundle, tmp_path):
    heldout = device_bundle.heldout(bundle)
    folder = tmp_path / "heldout"  # exactly the held-out files, in the order the images source reads them
    for index, (_, path) in enumerate(heldout):
        target = folder / f"{index:05d}{path.suffix}"
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(path.read_bytes())
    paths = sorted(folder.iterdir())
    expected = saved_model_top1(bundle, paths)
    device = daemon_top1(bundle, folder, "float32")
    assert len(device) == len(expected)
    agreement = np.mean([a == b for a, b in zip(device, expected)])
    assert agreement >= 0.99, list(zip(device, expected))
    if load_manifest(bundle).name == "tiny":  # our own bundle is trained well: its answers vary
        truth = [label for label, _ in heldout]
        assert np.mean([a == b for a, b in zip(expected, truth)]) >= 0.9
