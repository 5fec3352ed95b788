"""train_bundle(): train a classifier on an image folder and export a model bundle.

The command line (train/cli.py) is a thin layer over this function; tests call it directly.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np

from device.layout import BUNDLE_ENTRIES
from device.manifest import (
    LABELS_FILENAME,
    DatasetInfo,
    InputSpec,
    Manifest,
    ManifestError,
    load_manifest,
    manifest_path,
    save_manifest,
)
from train import starting
from train.dataset import DataError, make_dataset
from train.phases import best_epoch_callback, fit_phases
from train.sources import scan_sources

log = logging.getLogger("edgecam.train")

STRATEGIES = ("default", "mirrored", "multi-worker")


@dataclass
class TrainOptions:
    epochs: int = 15
    batch_size: int = 32
    image_size: Optional[int] = None  # 150 for the CNNs, the backbone's default, or --init-from's
    learning_rate: float = 1e-3
    seed: int = 0
    model: Optional[str] = None  # reference, or --init-from's architecture
    validation_split: float = 0.1
    patience: int = 4
    strategy: str = "default"
    cpu_devices: int = 2
    augment: bool = True
    resume: bool = False
    overwrite: bool = False
    verbose: int = -1  # -1: progress bar on a terminal, one line per epoch otherwise
    # transfer learning (train/starting.py, train/backbones.py, train/phases.py)
    alpha: Optional[float] = None
    weights: str = "imagenet"
    head_epochs: int = 5
    fine_tune_epochs: int = 10
    fine_tune_learning_rate: Optional[float] = None  # a tenth of learning_rate
    freeze: Optional[int] = None
    init_from: Optional[str] = None
    data_weight: Optional[list] = None  # one loss weight per --data folder


def learning_rate_schedule(options: TrainOptions, train_images: int):
    """Linear warm-up from a tenth of --learning-rate over the first epoch (over the first quarter of the
    steps when there are fewer than four epochs), then cosine decay to zero at --epochs. Without the warm-up, Adam at full rate in the first steps can drive the ReLU network of the
    reference model into a state where it predicts uniform probabilities for several epochs; the decay
    settles the weights so the best epoch is near the last. The step count lives in the optimizer, so
    --resume continues the schedule where it stopped."""
    import keras

    steps_per_epoch = max(1, -(-train_images // options.batch_size))
    warmup = min(steps_per_epoch, max(1, options.epochs * steps_per_epoch // 4))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=options.learning_rate / 10, decay_steps=max(1, options.epochs * steps_per_epoch - warmup),
        warmup_target=options.learning_rate, warmup_steps=warmup)


class BundleExistsError(ValueError):
    pass


def prepare_output(out: Path, options: TrainOptions) -> None:
    """Refuse to clobber: a different bundle needs --overwrite; an interrupted run needs --resume."""
    state = out / "checkpoints" / "state.json"
    if options.resume:
        if not state.is_file():
            raise BundleExistsError(
                f"--resume: {out} holds no interrupted run ({state} is missing). Start a new run without --resume."
            )
        return
    if not out.exists():
        return
    if not out.is_dir():
        raise BundleExistsError(f"--out {out} is a file, not a folder. Choose another --out.")
    entries = [p.name for p in out.iterdir()]
    if not entries:
        return
    ours = manifest_path(out).is_file() or state.is_file()
    if not ours:
        raise BundleExistsError(
            f"--out {out} is not empty and is not an edgecam bundle ({', '.join(sorted(entries)[:5])}...). "
            "Choose an empty or new folder for --out; edgecam never deletes files it did not write."
        )
    if not options.overwrite:
        what = "a bundle" if manifest_path(out).is_file() else "an interrupted training run"
        hint = "" if manifest_path(out).is_file() else ", continue it with --resume,"
        raise BundleExistsError(
            f"--out {out} already holds {what}. Choose another --out{hint} or pass --overwrite to replace it."
        )
    for name in BUNDLE_ENTRIES:  # only what a bundle consists of; anything else stays
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def make_strategy(options: TrainOptions):
    import tensorflow as tf

    if options.strategy == "default":
        return tf.distribute.get_strategy()
    if options.strategy == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(options.cpu_devices)]
            )
        except RuntimeError:  # already initialised in this process (tests): use what exists
            pass
        devices = [d.name for d in tf.config.list_logical_devices("CPU")][: options.cpu_devices]
        return tf.distribute.MirroredStrategy(devices=devices)
    if options.strategy == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "--strategy multi-worker needs the TF_CONFIG environment variable describing the cluster, e.g. "
                'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}}\'. Start the same command on every worker.'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown --strategy {options.strategy!r}; choose one of: {', '.join(STRATEGIES)}.")


def _is_chief() -> bool:
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    return task.get("type", "chief") == "chief" or (task.get("type") == "worker" and task.get("index", 0) == 0
                                                    and "chief" not in config.get("cluster", {}))


def _callbacks(out: Path, options: TrainOptions, state: dict, validation_images: int):
    import keras

    class EpochState(keras.callbacks.Callback):
        """Save the full model (weights + optimizer) and the epoch reached after every epoch, atomically,
        so that --resume loses no finished epoch even after a kill -9."""

        def on_epoch_end(self, epoch, logs=None):
            checkpoint = out / "checkpoints"
            checkpoint.mkdir(parents=True, exist_ok=True)
            temporary = checkpoint / "last.tmp.keras"
            self.model.save(temporary)
            os.replace(temporary, checkpoint / "last.keras")
            state["epochs_done"] = epoch + 1  # best epoch and wait: BestEpoch, which runs before this
            (checkpoint / "state.tmp.json").write_text(json.dumps(state, indent=2))
            os.replace(checkpoint / "state.tmp.json", checkpoint / "state.json")
            delay = float(os.environ.get("EDGECAM_TEST_EPOCH_DELAY", "0") or 0)  # tests: widen the kill window
            if delay:
                time.sleep(delay)

    return [
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=options.resume),
        keras.callbacks.TensorBoard(log_dir=str(out / "logs")),
        best_epoch_callback(out, options.patience, state, validation_images),  # checkpoint choice + early stop
        EpochState(),
    ]


def train_bundle(data_dir, out_dir, **overrides) -> Path:
    """Train on DATA and export the bundle into OUT; returns OUT. Raises DataError, BundleExistsError,
    ValueError with messages that say what to do."""
    options = TrainOptions(**overrides)
    out = Path(out_dir)
    start = starting.plan(options, set(overrides))  # sizes, weights, --init-from: checked before anything changes
    prepare_output(out, options)
    started = time.monotonic()

    import keras
    import tensorflow as tf

    from train.model import build_augmenter

    strategy = make_strategy(options)  # must come before any other TF op (logical CPU devices)
    keras.utils.set_random_seed(options.seed)
    tf.config.experimental.enable_op_determinism()  # same seed, same data -> same weights (CPU and GPU)
    print(f"strategy: {options.strategy}, {strategy.num_replicas_in_sync} replica(s)", flush=True)
    folder = scan_sources(data_dir, options.data_weight, options.validation_split, options.seed)
    size = (options.image_size, options.image_size)
    print(
        f"data: {folder.root} | classes: {', '.join(folder.class_names)} | train {len(folder.train)}, "
        f"validation {len(folder.validation)}, held-out {len(folder.test)} ({folder.heldout_source})"
        + (f" | skipped {len(folder.skipped)} unreadable file(s)" if folder.skipped else ""),
        flush=True,
    )
    if len(folder.sources) > 1 or options.data_weight:
        print(folder.summary(), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    augmenter = build_augmenter(options.seed) if options.augment else None
    weighted = any(source.weight != 1 for source in folder.sources)
    train_ds = make_dataset(folder.train, size, options.batch_size, shuffle=True, seed=options.seed,
                            augment=augmenter, sample_weights=folder.sample_weights("train") if weighted else None)
    val_ds = make_dataset(folder.validation, size, options.batch_size, shuffle=False, seed=options.seed)

    state: dict = {"options": asdict(options), "data": str(folder.root), "epochs_done": 0}
    initial_epoch = 0
    last = out / "checkpoints" / "last.keras"
    if options.resume:
        state = json.loads((out / "checkpoints" / "state.json").read_text())
        initial_epoch = int(state.get("epochs_done", 0)) if last.is_file() else 0
    else:  # mark the folder as ours at once, so a crash in epoch 1 leaves a run that --resume accepts
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        (out / "checkpoints" / "state.json").write_text(json.dumps(state, indent=2))
    with strategy.scope():
        if initial_epoch:
            model = keras.models.load_model(last)
            print(f"resuming after epoch {initial_epoch} ({last})", flush=True)
        else:
            model, state["new_head"] = starting.build(start, folder.class_names)
            if not start.two_phases:
                model.compile(optimizer=keras.optimizers.Adam(learning_rate_schedule(options, len(folder.train))),
                              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    verbose = options.verbose if options.verbose >= 0 else (1 if sys.stdout.isatty() else 2)
    if initial_epoch < options.epochs:
        callbacks = _callbacks(out, options, state, len(folder.validation))
        if start.two_phases:
            with strategy.scope():
                fit_phases(model, train_ds, val_ds, options, callbacks, state, initial_epoch, verbose,
                           len(folder.train))
        else:
            model.fit(train_ds, validation_data=val_ds, epochs=options.epochs, initial_epoch=initial_epoch,
                      shuffle=False, callbacks=callbacks, verbose=verbose)
    if not _is_chief():
        return out

    # Export the best epoch (by validation accuracy), not merely the last one.
    best = out / "checkpoints" / "best.keras"
    if best.is_file():
        model = keras.models.load_model(best)
    test_ds = make_dataset(folder.test, size, options.batch_size, shuffle=False, seed=options.seed)
    probabilities = model.predict(test_ds, verbose=0)
    predicted = np.argmax(probabilities, axis=1)
    test_accuracy = float(np.mean(predicted == np.asarray(folder.test.labels)))
    sources = folder.accuracy_per_source(predicted)
    export_bundle(model, out, folder, options, test_accuracy, time.monotonic() - started,
                  architecture=starting.architecture_info(start, model, state.get("new_head", False)),
                  sources=sources if len(sources) > 1 else [])
    if len(sources) > 1:
        for source in sources:
            shown = "-" if source["test_accuracy"] is None else f"{source['test_accuracy']:.4f}"
            print(f"held-out accuracy {shown} on {source['num_test']} images of {source['root']}", flush=True)
    print(f"held-out accuracy: {test_accuracy:.4f} on {len(folder.test)} images | bundle: {out} "
          f"| {time.monotonic() - started:.0f} s", flush=True)
    return out


def export_bundle(model, out: Path, folder, options: TrainOptions, test_accuracy: float, seconds: float,
                  architecture=None, sources=()):
    """SavedModel (serving signature: float32 NHWC RGB 0..255) + model.keras + labels + held-out list +
    plot + manifest, the manifest last so a bundle with a manifest is always complete."""
    import keras
    import tensorflow as tf

    for name in ("saved_model", "model.keras"):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    model.save(out / "model.keras")
    model.export(str(out / "saved_model"), format="tf_saved_model", verbose=False)
    (out / LABELS_FILENAME).write_text("".join(f"{name}\n" for name in folder.class_names), encoding="utf-8")
    lines = [f"{folder.class_names[label]}\t{Path(path).relative_to(folder.root)}\n"
             for path, label in zip(folder.test.paths, folder.test.labels)]
    (out / "heldout.txt").write_text("".join(lines), encoding="utf-8")
    plot_history(out / "history.csv", out / "training.png")
    manifest = Manifest(
        name=out.name,
        labels=list(folder.class_names),
        input=InputSpec(height=options.image_size, width=options.image_size),
        test_accuracy=round(test_accuracy, 6),
        dataset=DatasetInfo(
            root=str(folder.root), fingerprint=folder.fingerprint(), num_train=len(folder.train),
            num_validation=len(folder.validation), num_test=len(folder.test),
            heldout_source=folder.heldout_source, skipped_files=len(folder.skipped),
            validation_grouping=getattr(folder, "validation_grouping", ""), sources=list(sources),
        ),
        training={**asdict(options), "epochs_run": _epochs_in_history(out / "history.csv"),
                  "wall_time_s": round(seconds, 1)},
        versions={"python": platform.python_version(), "tensorflow": tf.__version__,
                  "keras": keras.__version__, "numpy": np.__version__},
        created_utc=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
    )
    if architecture is not None:
        manifest.architecture = architecture
    save_manifest(manifest, out)


def _epochs_in_history(path: Path) -> int:
    if not path.is_file():
        return 0
    with open(path, newline="") as stream:
        return sum(1 for _ in csv.DictReader(stream))


def plot_history(history_csv: Path, out_png: Path) -> None:
    """Training and validation accuracy and loss per epoch, as a PNG."""
    if not history_csv.is_file():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_csv, newline="") as stream:
        rows = list(csv.DictReader(stream))
    if not rows:
        return
    epochs = [int(row["epoch"]) + 1 for row in rows]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("accuracy", "loss")):
        axis.plot(epochs, [float(r[metric]) for r in rows], marker="o", label=f"training {metric}")
        if f"val_{metric}" in rows[0]:
            axis.plot(epochs, [float(r[f"val_{metric}"]) for r in rows], marker="o", label=f"validation {metric}")
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(out_png, dpi=80)
    plt.close(figure)


__all__ = ["train_bundle", "TrainOptions", "DataError", "BundleExistsError", "ManifestError", "load_manifest"]
