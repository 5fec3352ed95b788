"""A tiny, real bundle for the device tests, made directly with Keras and the TFLite converter.

Three colour classes drawn with Pillow at 40x40 (so the pipeline resizes 40 -> 32, as it would a camera
frame), a Rescaling(1/255) + Conv2D + GlobalAveragePooling + Dense softmax model at 32x32 trained for a
few epochs, exported as a SavedModel, converted to float32 and full-int8 TFLite, and described by a
manifest written with device.manifest.save_manifest. Host side only: TensorFlow is fine here.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

LABELS = ["paper", "rock", "scissors"]
MODEL_SIZE = 32
IMAGE_SIZE = 40
COLOURS = {"paper": (200, 40, 40), "rock": (40, 180, 40), "scissors": (40, 60, 210)}


def draw_images(root: Path, per_class: int, seed: int, background=(60, 140), light=(1.0, 1.0, 1.0)) -> list:
    """Noisy images whose class is the colour of a shape on a grey background -> [(label, path)]. BACKGROUND
    (the noise's range) and LIGHT (a gain per channel) make another scene of the same shapes (tests/test_drift.py)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    items = []
    for label in LABELS:
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            noise = rng.integers(*background, size=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
            image = Image.fromarray(noise)
            draw = ImageDraw.Draw(image)
            x, y = rng.integers(0, IMAGE_SIZE // 2, size=2)
            size = int(rng.integers(IMAGE_SIZE // 3, IMAGE_SIZE // 2))
            colour = tuple(int(np.clip(c + rng.integers(-30, 30), 0, 255)) for c in COLOURS[label])
            draw.ellipse([int(x), int(y), int(x) + size, int(y) + size], fill=colour)
            if tuple(light) != (1.0, 1.0, 1.0):
                image = Image.fromarray(np.clip(np.asarray(image) * np.asarray(light), 0, 255).astype(np.uint8))
            path = root / label / f"{label}_{index:03d}.png"
            image.save(path)
            items.append((label, path))
    return items


def load_images(items: list, size: int) -> tuple:
    from PIL import Image

    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR))
                       for _, p in items]).astype("float32")
    return images, np.array([LABELS.index(label) for label, _ in items])


def make_bundle(out: Path, seed: int = 0) -> Path:
    """Write a complete converted bundle to ``out`` (with data/ beside its tflite/) and return it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from device.manifest import DatasetInfo, InputSpec, Manifest, ModelFile, save_manifest, sha256_file

    out = Path(out)
    data = out / "data"
    train_items = draw_images(data / "train", 30, seed)
    test_items = draw_images(data / "test", 8, seed + 1)
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((MODEL_SIZE, MODEL_SIZE, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(LABELS), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    images, targets = load_images(train_items, MODEL_SIZE)
    with warnings.catch_warnings():  # Keras' own numpy-2 DeprecationWarning, not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        model.fit(images, targets, epochs=40, batch_size=16, verbose=0)
        model.export(str(out / "saved_model"), verbose=False)
        model.save(out / "model.keras")
    (out / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (out / "heldout.txt").write_text(
        "".join(f"{label}\t{path.relative_to(data)}\n" for label, path in test_items))

    rng = np.random.default_rng(seed)

    def representative():
        for _ in range(32):
            yield [rng.integers(0, 256, size=(1, MODEL_SIZE, MODEL_SIZE, 3)).astype("float32")]
        for image in images[:32]:
            yield [image[None]]

    tflite = out / "tflite"
    tflite.mkdir()
    models = {}
    for fmt in ("float32", "int8"):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(out / "saved_model"))
        if fmt == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        path = tflite / f"model_{fmt}.tflite"
        path.write_bytes(converter.convert())
        interpreter = Interpreter(model_path=str(path))
        source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        models[fmt] = ModelFile(
            format=fmt, file=f"tflite/{path.name}", sha256=sha256_file(path), size_bytes=path.stat().st_size,
            input_dtype=np.dtype(source["dtype"]).name, output_dtype=np.dtype(target["dtype"]).name,
            input_scale=float(source["quantization"][0]), input_zero_point=int(source["quantization"][1]),
            output_scale=float(target["quantization"][0]), output_zero_point=int(target["quantization"][1]))
    manifest = Manifest(
        name="tiny", labels=list(LABELS), input=InputSpec(height=MODEL_SIZE, width=MODEL_SIZE),
        dataset=DatasetInfo(root=str(data), num_train=len(train_items), num_test=len(test_items),
                            heldout_source="test-folder"),
        models=models, versions={"tensorflow": tf.__version__},
    )
    save_manifest(manifest, out)
    return out


def heldout(bundle: Path) -> list:
    """[(label, absolute path)] from the bundle's heldout.txt."""
    from device.manifest import load_manifest

    manifest = load_manifest(bundle)
    root = Path(manifest.dataset.root)
    if not root.is_absolute():
        root = Path(bundle) / root
    lines = (Path(bundle) / manifest.heldout_file).read_text().splitlines()
    return [(label, root / relative) for label, relative in (line.split("\t", 1) for line in lines if line)]


_BUILT: dict = {}


def shared_bundle(tmp_path_factory) -> Path:
    """One bundle per test session, shared by every test module that asks (built on first use).
    Read-only: tests that change a bundle copy it first."""
    key = str(tmp_path_factory.getbasetemp())
    if key not in _BUILT:
        _BUILT[key] = make_bundle(tmp_path_factory.mktemp("device-bundle") / "tiny")
    return _BUILT[key]


def copy_bundle(bundle: Path, destination: Path) -> Path:
    """A private copy (without the training images, which stay where the manifest says)."""
    import shutil

    shutil.copytree(bundle, destination, ignore=shutil.ignore_patterns("data"))
    return destination
