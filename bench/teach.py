"""Teaching, measured: how fast the device embeds and fits (``make bench`` rows), and what teaching does on a
shifted style (``make teach-demo``: the README's figures).

    python -m bench.teach --bundle artifacts/rps --seeds 7,8,9   # shifted-style figures, Markdown + JSON

The shifted style is train/datagen.py's ``style="camera"`` (one fixed camera rig: green cloth, warm dim light,
blur, vignetting, noise), drawn from its own seed. The built-in model is scored on unseen camera-style images,
then a head is taught on a few dozen other camera-style images (a copy of the bundle, so the bundle itself
is untouched) and scored on the same unseen ones, all through the device's own code; under several seeds,
with the mean, the worst and the spread, beside the previous recipe's figure and the gate's own.
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
    """{"embed_fps": frames embedded a second (decode excluded), "fit_seconds": the teach fit on FRAMES frames
    (3 classes, each frame in its 6 looks: 5-fold cross-validation over 3 L2 values and the learning curve,
    then the final head on all of them)}; {} when the bundle has no embedding output."""
    from device.manifest import load_manifest
    from device.teach import augment, crossval
    from device.teach.teaching import load_classifier

    if load_manifest(bundle).embedding is None:
        return {}
    classifier = load_classifier(bundle, model, threads)
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, size=(16, 480, 640, 3), dtype=np.uint8)  # camera-size frames, resized per frame
    started = time.perf_counter()
    embeddings = np.stack([classifier.outputs(pool[index % len(pool)])[1] for index in range(frames)])
    embed_seconds = time.perf_counter() - started
    looks = len(augment.VARIANTS)
    labels = np.arange(frames) % 3
    vectors = embeddings[:, None, :] + rng.normal(0, 0.05, (frames, looks, embeddings.shape[1])).astype(np.float32)
    vectors += labels[:, None, None] * 0.02  # a little signal, so the fit has something to find
    started = time.perf_counter()
    folds = crossval.assign_folds(labels, [None] * frames)
    crossval.search_then_fit(vectors, labels, folds, 3)
    return {"embed_fps": frames / embed_seconds, "fit_seconds": time.perf_counter() - started, "frames": frames,
            "embedding": int(embeddings.shape[1]), "looks": looks}


def fit_cost(per_class: int, size: int = 512, classes: int = 3, seed: int = 0) -> dict:
    """The teach fit alone (cross-validation, learning curve, final head) on synthetic SIZE-wide embeddings of
    PER_CLASS frames a class in 6 looks -> {"cpu_seconds", "wall_seconds", "steps"}: what the fit costs on
    this machine, without a bundle (CPU seconds are what to scale for another board)."""
    from device.teach import augment, crossval

    rng = np.random.default_rng(seed)
    frames, looks = per_class * classes, len(augment.VARIANTS)
    labels = np.arange(frames) % classes
    centres = rng.normal(0, 1, (classes, size))
    vectors = np.maximum(0, centres[labels][:, None, :] + rng.normal(0, 2, (frames, looks, size))).astype(np.float32)
    cpu, wall = time.process_time(), time.perf_counter()
    run, _, _ = crossval.search_then_fit(vectors, labels, crossval.assign_folds(labels, [None] * frames), classes)
    return {"per_class": per_class, "frames": frames, "looks": looks, "size": size, "steps": run.steps,
            "cpu_seconds": time.process_time() - cpu, "wall_seconds": time.perf_counter() - wall}


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
    """Built-in vs taught accuracy on unseen camera-style images (seed SEED) -> a dict of figures. Also the
    previous recipe (a fifth held out for the early stop, the head fitted on the rest, no variants) on the same
    frames, and the gate's cross-validated figure beside the unseen one."""
    from device.heads.head import fit, split_heldout
    from device.heads.store import load_revision
    from device.teach.evaluate import evaluate
    from device.teach.teaching import collect, embed, load_classifier, teach
    from train.datagen import generate_dataset

    workdir = Path(workdir)
    data = workdir / f"camera-{seed}"
    generate_dataset(data, train_per_class=teach_per_class, test_per_class=test_per_class, size=size, seed=seed,
                     progress=False, style="camera", workers=1)
    copy = light_copy(bundle, workdir / f"bundle-{seed}")
    before = evaluate(copy, data / "test", model, threads)
    result = teach(copy, data / "train", model, force=True, seed=0, threads=threads)
    after = evaluate(copy, data / "test", model, threads)
    classifier = load_classifier(copy, model, threads)
    labels, items = collect(data / "train")
    truth = np.array([index for index, _ in items])
    _, lessons = embed(classifier, [path for _, path in items])
    _, tests = collect(data / "test")
    test_truth = np.array([labels.index(path.parent.name) for _, path in tests])
    _, unseen = embed(classifier, [path for _, path in tests])
    train, heldout = split_heldout(truth, 0.2, seed=0)
    previous, _ = fit(lessons[train, 0], truth[train], len(labels), (lessons[heldout, 0], truth[heldout]))
    accuracy_previous = float(np.mean(previous.probabilities(unseen[:, 0]).argmax(axis=1) == test_truth))
    head = load_revision(copy, result["revision"]).head
    accuracy_direct = float(np.mean(head.probabilities(unseen[:, 0]).argmax(axis=1) == test_truth))
    return {"bundle": str(bundle), "model": model, "style": "camera", "seed": seed, "size": size,
            "teach_images": teach_per_class * 3, "test_images": test_per_class * 3,
            "accuracy_builtin": before.accuracy, "accuracy_taught": after.accuracy,
            "accuracy_taught_numpy": accuracy_direct, "accuracy_previous_recipe": accuracy_previous,
            "crossval_accuracy_new": result["accuracy_new"], "crossval_accuracy_current": result["accuracy_current"],
            "method": result["method"], "l2": result["l2"], "steps": result["steps"],
            "validation": result["validation"], "advice": result["advice"],
            "teach_seconds": result["seconds"], "embed_seconds": result["embed_seconds"],
            "fit_seconds": result["fit_seconds"], "confusion_builtin": before.confusion,
            "confusion_taught": after.confusion, "labels": after.labels}


def spread(values) -> dict:
    values = np.asarray(values, float)
    return {"mean": float(values.mean()), "min": float(values.min()), "max": float(values.max()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}


def several_seeds(bundle, workdir, seeds, **options) -> dict:
    runs = [shifted_style(bundle, workdir, seed=seed, **options) for seed in seeds]
    keys = ("accuracy_builtin", "accuracy_taught", "accuracy_previous_recipe", "crossval_accuracy_new")
    return {"bundle": str(bundle), "seeds": list(seeds), "runs": runs,
            "summary": {key: spread([run[key] for run in runs]) for key in keys}}


def markdown(figures: dict) -> str:
    runs = figures["runs"]
    first = runs[0]
    lines = [f"Shifted style (train/datagen.py style=camera, {first['size']} px), bundle {figures['bundle']}, "
             f"{first['model']} model, through the device's own code; taught on {first['teach_images']} "
             f"camera-style images, scored on {first['test_images']} others the fit never saw:", "",
             "| seed | built-in (revision 0) | taught (this fit) | previous recipe (held-out fifth, no variants) "
             "| gate: cross-validated | teach seconds |", "|---|---:|---:|---:|---:|---:|"]
    for run in runs:
        lines.append(f"| {run['seed']} | {run['accuracy_builtin']:.1%} | {run['accuracy_taught']:.1%} | "
                     f"{run['accuracy_previous_recipe']:.1%} | {run['crossval_accuracy_new']:.1%} | "
                     f"{run['teach_seconds']:.1f} |")
    summary = figures["summary"]

    def cell(key):
        entry = summary[key]
        return f"{entry['mean']:.1%} (worst {entry['min']:.1%}, sd {entry['std']:.1%})"

    lines += [f"| mean of {len(runs)} | {cell('accuracy_builtin')} | {cell('accuracy_taught')} | "
              f"{cell('accuracy_previous_recipe')} | {cell('crossval_accuracy_new')} | |", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.teach", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bundle", default="artifacts/rps", help="converted bundle with an embedding output")
    parser.add_argument("--teach-per-class", type=int, default=30, help="camera-style images taught per class")
    parser.add_argument("--test-per-class", type=int, default=100, help="unseen camera-style images per class")
    parser.add_argument("--size", type=int, default=150, help="image side in pixels")
    parser.add_argument("--seeds", default="7,8,9", help="seeds of the camera-style images (comma-separated)")
    parser.add_argument("--model", default="int8", help="model format")
    parser.add_argument("--out", default=None, help="also write the figures here (.json) and beside it (.md)")
    parser.add_argument("--fit-cost", default=None, metavar="N,N",
                        help="only time the fit on synthetic 512-wide embeddings of N frames a class (no bundle)")
    args = parser.parse_args(argv)
    if args.fit_cost:
        for per_class in (int(n) for n in args.fit_cost.split(",") if n.strip()):
            cost = fit_cost(per_class)
            print(f"fit on {cost['frames']} frames x {cost['looks']} looks ({cost['size']}-wide): "
                  f"{cost['cpu_seconds']:.1f} s CPU, {cost['wall_seconds']:.1f} s wall, {cost['steps']} steps")
        return 0
    with tempfile.TemporaryDirectory(prefix="edgecam-teach-demo-") as workdir:
        try:
            seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
            figures = several_seeds(args.bundle, workdir, seeds, teach_per_class=args.teach_per_class,
                                    test_per_class=args.test_per_class, size=args.size, model=args.model)
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
