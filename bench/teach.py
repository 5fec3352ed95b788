"""Teaching, measured: how fast the device embeds and fits (``make bench`` rows), and what teaching does on a
shifted style (``make teach-demo``: the README's figures).

    python -m bench.teach --bundle artifacts/rps            # shifted-style figures, Markdown + JSON

The shifted style is train/datagen.py's ``style="camera"`` (one fixed camera rig: green cloth, warm dim light,
blur, vignetting, noise), drawn from its own seed. The built-in model is scored on unseen camera-style images,
then a head is taught on a few dozen other camera-style images (a copy of the bundle, so the bundle itself
is untouched) and scored on the same unseen ones, all through the device's own code.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TEACH_FRAMES = 600


def measure_teach(bundle, threads: int, frames: int = TEACH_FRAMES, model: str = "int8") -> dict:
    """{"embed_fps": frames embedded a second (decode excluded), "fit_seconds": one head fit on FRAMES
    embeddings (3 classes, a fifth held out)}; {} when the bundle has no embedding output."""
    from device.manifest import load_manifest
    from device.teach.head import fit, split_heldout
    from device.teach.teaching import load_classifier

    if load_manifest(bundle).embedding is None:
        return {}
    classifier = load_classifier(bundle, model, threads)
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, size=(16, 480, 640, 3), dtype=np.uint8)  # camera-size frames, resized per frame
    started = time.perf_counter()
    embeddings = np.stack([classifier.outputs(pool[index % len(pool)])[1] for index in range(frames)])
    embed_seconds = time.perf_counter() - started
    embeddings = embeddings + rng.normal(0, 0.01, embeddings.shape).astype(np.float32)
    labels = np.arange(frames) % 3
    train, heldout = split_heldout(labels)
    started = time.perf_counter()
    fit(embeddings[train], labels[train], 3, (embeddings[heldout], labels[heldout]))
    return {"embed_fps": frames / embed_seconds, "fit_seconds": time.perf_counter() - started, "frames": frames,
            "embedding": int(embeddings.shape[1])}


def light_copy(bundle, destination: Path) -> Path:
    """The files the device needs (manifest, labels, tflite/), without SavedModel, checkpoints or heads."""
    bundle = Path(bundle)
    destination.mkdir(parents=True)
    for name in ("manifest.json", "labels.txt"):
        shutil.copy2(bundle / name, destination / name)
    shutil.copytree(bundle / "tflite", destination / "tflite")
    return destination


def shifted_style(bundle, workdir, teach_per_class: int = 30, test_per_class: int = 100, size: int = 150,
                  seed: int = 7, model: str = "int8", threads: int | None = None) -> dict:
    """Built-in vs taught accuracy on unseen camera-style images -> a dict of figures."""
    from device.teach.evaluate import evaluate
    from device.teach.teaching import teach
    from train.datagen import generate_dataset

    workdir = Path(workdir)
    data = workdir / "camera"
    generate_dataset(data, train_per_class=teach_per_class, test_per_class=test_per_class, size=size, seed=seed,
                     progress=False, style="camera", workers=1)
    copy = light_copy(bundle, workdir / "bundle")
    before = evaluate(copy, data / "test", model, threads)
    result = teach(copy, data / "train", model, force=True, seed=0, threads=threads)
    after = evaluate(copy, data / "test", model, threads)
    return {"bundle": str(bundle), "model": model, "style": "camera", "seed": seed, "size": size,
            "teach_images": teach_per_class * 3, "test_images": test_per_class * 3,
            "accuracy_builtin": before.accuracy, "accuracy_taught": after.accuracy,
            "heldout_accuracy_new": result["accuracy_new"], "heldout_accuracy_current": result["accuracy_current"],
            "teach_seconds": result["seconds"], "confusion_builtin": before.confusion,
            "confusion_taught": after.confusion, "labels": after.labels}


def markdown(figures: dict) -> str:
    return "\n".join([
        f"Shifted style (train/datagen.py style=camera, seed {figures['seed']}, {figures['size']} px), "
        f"bundle {figures['bundle']}, {figures['model']} model, through the device's own code:", "",
        "| head | accuracy on unseen camera-style images |", "|---|---:|",
        f"| built-in (revision 0) | {figures['accuracy_builtin']:.1%} |",
        f"| taught on {figures['teach_images']} camera-style images | {figures['accuracy_taught']:.1%} |", "",
        f"{figures['test_images']} unseen images; teaching took {figures['teach_seconds']:.1f} s "
        f"(embedding + fit, on this machine).", ""])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.teach", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bundle", default="artifacts/rps", help="converted bundle with an embedding output")
    parser.add_argument("--teach-per-class", type=int, default=30, help="camera-style images taught per class")
    parser.add_argument("--test-per-class", type=int, default=100, help="unseen camera-style images per class")
    parser.add_argument("--size", type=int, default=150, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=7, help="seed of the camera-style images")
    parser.add_argument("--model", default="int8", help="model format")
    parser.add_argument("--out", default=None, help="also write the figures here (.json) and beside it (.md)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgecam-teach-demo-") as workdir:
        try:
            figures = shifted_style(args.bundle, workdir, args.teach_per_class, args.test_per_class, args.size,
                                    args.seed, args.model)
        except ValueError as error:
            print(f"teach-demo: {error}", file=sys.stderr)
            return 2
    text = markdown(figures)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(figures, indent=2) + "\n")
        out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
