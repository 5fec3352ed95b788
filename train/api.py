"""train_bundle(): train a classifier on an image folder and export a model bundle.

The command line (train/cli.py) is a thin layer over this function; tests call it directly.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
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

from device import layout
from device.atomic import atomic_write
from device.manifest import (
    DatasetInfo,
    InputSpec,
    Manifest,
    ManifestError,
    load_manifest,
    manifest_path,
    save_manifest,
)
from train import fewshot, starting
from train.dataset import DataError, make_dataset
from train.phases import best_epoch_callback, fit_phases, learning_rate_schedule
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


class BundleExistsError(ValueError):
    pass


def run_state(out: Path) -> Path:
    """Where an in-progress run keeps its progress: its staging folder beside the bundle (see device/layout.py),
    so the bundle in OUT stays as it was until the new one is exported, and --resume finds the run there."""
    return layout.staging_path(out, run_purpose()) / layout.CHECKPOINTS / RUN_STATE


def run_purpose() -> str:
    """The chief's run is the bundle's staging folder (.NAME.training); another multi-worker worker keeps its
    own (.NAME.training-worker-N), so --resume finds its checkpoints too, and it never writes a bundle."""
    return layout.TRAINING_RUN if _is_chief() else f"{layout.TRAINING_RUN}-worker-{_task_index()}"


def check_inputs(data_dir, out: Path, options: TrainOptions):
    """Everything that can be checked before training starts, so a typo fails in seconds and loses nothing:
    the options, the output folder, then every image in the data folder (decoded once)."""
    check_options(options)
    check_output(out, options)
    return scan_sources(data_dir, options.data_weight, options.validation_split, options.seed)


def check_options(options: TrainOptions) -> None:
    from train.backbones import TRANSFER_MODELS
    from train.model import MODELS, SMALLEST_IMAGE_SIZE

    if options.strategy not in STRATEGIES:
        raise ValueError(f"Unknown --strategy {options.strategy!r}; choose one of: {', '.join(STRATEGIES)}.")
    if options.strategy == "multi-worker" and "TF_CONFIG" not in os.environ:
        raise ValueError(_TF_CONFIG_HINT)
    if options.model not in MODELS + TRANSFER_MODELS:
        raise ValueError(f"Unknown --model {options.model!r}; choose one of: {', '.join(MODELS + TRANSFER_MODELS)}.")
    if options.strategy == "multi-worker" and options.model in TRANSFER_MODELS:
        raise ValueError(f"--strategy multi-worker trains the CNNs trained from scratch ({', '.join(MODELS)}); "
                         f"--model {options.model} trains in two phases on one machine (drop --strategy, or use "
                         "--strategy mirrored for several GPUs).")
    for name in ("epochs", "batch_size", "image_size", "patience", "cpu_devices"):
        value = getattr(options, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive whole number, got {value!r}.")
    if not (isinstance(options.learning_rate, (int, float)) and math.isfinite(options.learning_rate)
            and options.learning_rate > 0):
        raise ValueError(f"--learning-rate must be a positive number, got {options.learning_rate!r} (e.g. 0.001).")
    smallest = SMALLEST_IMAGE_SIZE.get(options.model, 1)
    if options.image_size < smallest:
        raise ValueError(f"--image-size {options.image_size} is too small for the {options.model} model (needs at "
                         f"least {smallest} pixels a side); use a larger --image-size or --model small.")
    if not 0.0 <= options.validation_split < 0.9:
        raise DataError(f"--validation-split must be in [0, 0.9), got {options.validation_split}.")


def check_output(out: Path, options: TrainOptions) -> None:
    """Refuse to clobber and refuse early: a different bundle needs --overwrite, an interrupted run --resume or
    --overwrite, a folder edgecam did not write is never touched, and the folder beside OUT must be writable
    (the new bundle is written there first). Nothing is deleted here: the old bundle is replaced only when
    the new one has been exported (train_bundle)."""
    state = run_state(out)
    if out.exists() and not out.is_dir():
        raise BundleExistsError(f"--out {out} is a file, not a folder. Choose another --out.")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    has_bundle = manifest_path(out).is_file()
    if entries and not has_bundle and not (out / layout.CHECKPOINTS).is_dir():
        raise BundleExistsError(
            f"--out {out} is not empty and is not an edgecam bundle ({', '.join(entries[:5])}...). "
            "Choose an empty or new folder for --out; edgecam never deletes files it did not write."
        )
    if options.resume:
        if not state.is_file():
            raise BundleExistsError(
                f"--resume: there is no interrupted run for {out} ({state} is missing). "
                "Start a new run without --resume."
            )
    elif state.is_file() and not options.overwrite:
        raise BundleExistsError(
            f"An interrupted training run for --out {out} is in {state.parent.parent}: continue it with --resume, "
            "or pass --overwrite to start over."
        )
    elif (out / layout.CHECKPOINTS).is_dir() and not has_bundle and not options.overwrite:
        raise BundleExistsError(
            f"--out {out} holds an interrupted run of an older edgecam (it kept runs in --out itself), which "
            "this version cannot resume. Pass --overwrite to start over, or choose another --out."
        )
    elif has_bundle and not options.overwrite:
        raise BundleExistsError(
            f"--out {out} already holds a bundle. Choose another --out or pass --overwrite to replace it "
            "(it is replaced only once the new bundle is exported)."
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BundleExistsError(f"Cannot create {out.parent} for --out {out}: {error.strerror}. "
                                "Choose another --out.") from None
    for folder in (out.parent, out) if out.is_dir() else (out.parent,):
        problem = layout.writable_problem(folder)
        if problem:
            raise BundleExistsError(
                f"Cannot write to {folder} ({problem}): the new bundle is written beside --out {out} and swapped "
                "in when it is complete. Make the folder writable or choose another --out."
            )


_TF_CONFIG_HINT = (
    "--strategy multi-worker needs the TF_CONFIG environment variable describing the cluster, e.g. "
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}\'. Start the same command on every worker.'
)


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
            raise ValueError(_TF_CONFIG_HINT)
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown --strategy {options.strategy!r}; choose one of: {', '.join(STRATEGIES)}.")


def _task_index() -> int:
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    return int(config.get("task", {}).get("index", 0))


def _is_chief() -> bool:
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    return task.get("type", "chief") == "chief" or (task.get("type") == "worker" and task.get("index", 0) == 0
                                                    and "chief" not in config.get("cluster", {}))


def _callbacks(out: Path, options: TrainOptions, state: dict, validation_images: int):
    import keras

    class EpochState(keras.callbacks.Callback):
        """Record the epoch (see save_epoch) so that --resume loses no finished epoch even after a kill -9."""

        def on_epoch_end(self, epoch, logs=None):
            save_epoch(self.model, out / layout.CHECKPOINTS, state, epoch, logs or {})
            publish_run(out, state)

    return [
        keras.callbacks.TensorBoard(log_dir=str(out / layout.LOGS)),
        best_epoch_callback(options.patience, state, validation_images),  # checkpoint choice + early stop
        EpochState(),
    ]


# ---- the run's record: checkpoints/state.json and the files it names ------------------------------------------
RUN_STATE = "state.json"
LAST_CHECKPOINT = "last.keras"
BEST_CHECKPOINT = "best.keras"


def save_epoch(model, checkpoints: Path, state: dict, epoch: int, logs: dict) -> None:
    """The epoch's record, committed by one rename. The model after this epoch goes to a new file
    (epoch-NNNN.keras, weights and optimizer), then state.json - epochs done, every epoch's history row, the
    best-epoch scores, and which epoch files are the last and the best - replaces the previous one. A kill before
    that rename leaves the previous record whole (the new file is an orphan that publish_run removes); after it,
    everything else is derived from state.json (publish_run)."""
    checkpoints.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch + 1:04d}.keras"
    temporary = checkpoints / f"saving-{name}"  # Keras insists on the .keras suffix
    model.save(temporary)
    os.replace(temporary, checkpoints / name)
    state["history"] = [row for row in state.get("history", []) if row["epoch"] < epoch]
    state["history"].append({"epoch": epoch, **{key: float(value) for key, value in sorted(logs.items())}})
    state.update(epochs_done=epoch + 1, last=name)
    if state.get("best_epoch") == epoch + 1:  # BestEpoch, which runs before this, found it better
        state["best"] = name
    atomic_write(checkpoints / RUN_STATE, json.dumps(state, indent=2))


def publish_run(out: Path, state: dict) -> None:
    """Make what is derived from the committed record (save_epoch) agree with it: history.csv, last.keras and
    best.keras (hard links of the epoch files state.json names), and no other epoch file. Runs after every
    commit and when --resume starts, so a kill between a commit and this leaves nothing --resume does not mend."""
    checkpoints = out / layout.CHECKPOINTS
    write_history(out / layout.HISTORY, state.get("history", []))
    for alias, key in ((LAST_CHECKPOINT, "last"), (BEST_CHECKPOINT, "best")):
        if state.get(key) and (checkpoints / state[key]).is_file():
            _replace_by_link(checkpoints / state[key], checkpoints / alias)
    named = {state.get("last"), state.get("best")}
    for stale in checkpoints.glob("*epoch-*.keras*"):
        if stale.name not in named:
            stale.unlink()


def write_history(path: Path, rows: list) -> None:
    """history.csv, as Keras's CSVLogger writes it (epoch, then the metrics in name order), replaced whole."""
    columns = ["epoch"] + sorted({key for row in rows for key in row} - {"epoch"})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, text.getvalue())


def _replace_by_link(source: Path, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:  # a file system without hard links
        shutil.copy2(source, temporary)
    os.replace(temporary, target)


def _resumed_state(checkpoints: Path, history_csv: Path) -> dict:
    """state.json of the run --resume continues; a run an earlier version left has no history in it: its
    finished epochs' rows are taken from history.csv."""
    state = json.loads((checkpoints / RUN_STATE).read_text())
    if "history" not in state and history_csv.is_file():
        with open(history_csv, newline="") as stream:
            rows = [{key: float(value) if key != "epoch" else int(value) for key, value in row.items() if value}
                    for row in csv.DictReader(stream)]
        state["history"] = [row for row in rows if row["epoch"] < int(state.get("epochs_done", 0))]
    if "last" not in state and (checkpoints / LAST_CHECKPOINT).is_file():
        state["last"] = LAST_CHECKPOINT
    if "best" not in state and (checkpoints / BEST_CHECKPOINT).is_file():
        state["best"] = BEST_CHECKPOINT
    return state


def train_bundle(data_dir, out_dir, **overrides) -> Path:
    """Train on DATA (one folder, or a list of them merged by class name) and export the bundle into OUT;
    returns OUT. Raises DataError, BundleExistsError, ValueError with messages that say what to do, before any
    training when the inputs are wrong.

    The run is written into the staging folder beside OUT (device/layout.py's Stage) and swapped in only
    when the export succeeded: until then OUT holds the previous bundle, untouched. An interrupted or failed
    run stays in the staging folder, where --resume continues it."""
    options = TrainOptions(**overrides)
    out = Path(out_dir)
    start = starting.plan(options, set(overrides))  # sizes, weights, --init-from: resolved and checked first
    folder = check_inputs(data_dir, out, options)
    started = time.monotonic()
    chief = _is_chief()
    stage = layout.Stage(out, keep_staging=options.resume, purpose=run_purpose())
    work = stage.open()
    try:
        if not options.resume:
            layout.clear_entries(work)  # the copy keeps only files that are not part of a bundle
        model, test_accuracy, sources, architecture = _train(folder, work, options, start)
        if chief:
            export_bundle(model, work, folder, options, test_accuracy, time.monotonic() - started, name=out.name,
                          architecture=architecture, sources=sources if len(sources) > 1 else [])
    except BaseException:
        stage.leave()  # the run stays resumable; OUT is untouched
        raise
    if not chief:
        stage.leave()
        shutil.rmtree(work, ignore_errors=True)
        return out
    stage.commit()
    if len(sources) > 1:
        for source in sources:
            shown = "-" if source["test_accuracy"] is None else f"{source['test_accuracy']:.4f}"
            print(f"held-out accuracy {shown} on {source['num_test']} images of {source['root']}", flush=True)
    print(f"held-out accuracy: {test_accuracy:.4f} on {len(folder.test)} images | bundle: {out} "
          f"| {time.monotonic() - started:.0f} s", flush=True)
    return out


def _train(folder, work: Path, options: TrainOptions, start):
    """Fit (or continue fitting) in WORK; -> (the best epoch's model, its held-out accuracy, accuracy per
    --data folder, the manifest's ArchitectureInfo)."""
    import keras
    import tensorflow as tf

    from train.model import build_augmenter

    strategy = make_strategy(options)  # must come before any other TF op (logical CPU devices)
    keras.utils.set_random_seed(options.seed)
    tf.config.experimental.enable_op_determinism()  # same seed, same data -> same weights (CPU and GPU)
    print(f"strategy: {options.strategy}, {strategy.num_replicas_in_sync} replica(s)", flush=True)
    size = (options.image_size, options.image_size)
    print(
        f"data: {folder.root} | classes: {', '.join(folder.class_names)} | train {len(folder.train)}, "
        f"validation {len(folder.validation)}, held-out {len(folder.test)} ({folder.heldout_source})"
        + (f" | skipped {len(folder.skipped)} unreadable file(s)" if folder.skipped else ""),
        flush=True,
    )
    if len(folder.sources) > 1 or options.data_weight:
        print(folder.summary(), flush=True)
    augmenter = build_augmenter(options.seed) if options.augment else None
    weighted = any(source.weight != 1 for source in folder.sources)
    train_ds = make_dataset(folder.train, size, options.batch_size, shuffle=True, seed=options.seed,
                            augment=augmenter, sample_weights=folder.sample_weights("train") if weighted else None)
    val_ds = make_dataset(folder.validation, size, options.batch_size, shuffle=False, seed=options.seed)

    checkpoints = work / layout.CHECKPOINTS
    state: dict = {"options": asdict(options), "data": str(folder.root), "epochs_done": 0}
    initial_epoch = 0
    last = checkpoints / LAST_CHECKPOINT
    if options.resume:
        state = _resumed_state(checkpoints, work / layout.HISTORY)
        publish_run(work, state)  # a kill after the last commit may have left the derived files behind it
        initial_epoch = int(state.get("epochs_done", 0)) if last.is_file() else 0
    else:  # mark the run at once, so a crash in epoch 1 leaves a run that --resume accepts
        checkpoints.mkdir(parents=True, exist_ok=True)
        atomic_write(checkpoints / RUN_STATE, json.dumps(state, indent=2))
    with strategy.scope():
        if initial_epoch:
            model = keras.models.load_model(last)
            print(f"resuming after epoch {initial_epoch} ({last})", flush=True)
        else:
            model, state["new_head"] = starting.build(start, folder.class_names)
            if start.init_from is not None and not start.freeze_given:  # few images: train/fewshot.py
                state["few_images"] = fewshot.start(model, folder, options)
            if not start.two_phases or state.get("few_images"):
                model.compile(optimizer=keras.optimizers.Adam(learning_rate_schedule(options, len(folder.train))),
                              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            if state.get("few_images") and len(folder.validation):
                fewshot.keep_the_start(model, val_ds, work, state)
    verbose = options.verbose if options.verbose >= 0 else (1 if sys.stdout.isatty() else 2)
    if initial_epoch < options.epochs:
        callbacks = _callbacks(work, options, state, len(folder.validation))
        if options.strategy == "multi-worker":  # Keras 3's fit cannot (train/multiworker.py)
            from train.multiworker import fit_multi_worker

            callbacks = [c for c in callbacks if not isinstance(c, keras.callbacks.TensorBoard)]
            fit_multi_worker(model, strategy, train_ds, val_ds, epochs=options.epochs, initial_epoch=initial_epoch,
                             callbacks=callbacks, verbose=verbose)
        elif start.two_phases:
            with strategy.scope():
                fit_phases(model, train_ds, val_ds, options, callbacks, state, initial_epoch, verbose,
                           len(folder.train))
        else:
            model.fit(train_ds, validation_data=val_ds, epochs=options.epochs, initial_epoch=initial_epoch,
                      shuffle=False, callbacks=callbacks, verbose=verbose)

    # Export the best epoch (by validation accuracy, ties by validation loss), not merely the last one.
    # Multi-worker: always a file, so that the chief alone never runs the distributed model (its collectives
    # would wait for the others).
    best = checkpoints / BEST_CHECKPOINT
    if best.is_file():
        model = keras.models.load_model(best)
    elif options.strategy == "multi-worker" and last.is_file():
        model = keras.models.load_model(last)
    test_ds = make_dataset(folder.test, size, options.batch_size, shuffle=False, seed=options.seed)
    probabilities = model.predict(test_ds, verbose=0)
    predicted = np.argmax(probabilities, axis=1)
    test_accuracy = float(np.mean(predicted == np.asarray(folder.test.labels)))
    sources = folder.accuracy_per_source(predicted)
    architecture = starting.architecture_info(start, model, state.get("new_head", False))
    return model, test_accuracy, sources, architecture


def export_bundle(model, out: Path, folder, options: TrainOptions, test_accuracy: float, seconds: float,
                  name: str | None = None, architecture=None, sources=()):
    """SavedModel (serving signature: float32 NHWC RGB 0..255) + model.keras + labels + held-out list +
    plot + manifest, the manifest last so a bundle with a manifest is always complete. NAME: the bundle's
    name (default: OUT's folder name; train_bundle exports into the staging folder and passes it)."""
    import keras
    import tensorflow as tf

    for entry in (layout.SAVED_MODEL, layout.KERAS_MODEL):
        path = out / entry
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    model.save(out / layout.KERAS_MODEL)
    model.export(str(out / layout.SAVED_MODEL), format="tf_saved_model", verbose=False)
    (out / layout.LABELS).write_text("".join(f"{label}\n" for label in folder.class_names), encoding="utf-8")
    heldout = [(folder.class_names[label], Path(path).relative_to(folder.root))
               for path, label in zip(folder.test.paths, folder.test.labels)]
    (out / layout.HELDOUT).write_text(layout.format_heldout(heldout), encoding="utf-8")
    plot_history(out / layout.HISTORY, out / layout.TRAINING_PLOT)
    manifest = Manifest(
        name=name or out.name,
        labels=list(folder.class_names),
        input=InputSpec(height=options.image_size, width=options.image_size),
        test_accuracy=round(test_accuracy, 6),
        dataset=DatasetInfo(
            root=str(folder.root), fingerprint=folder.fingerprint(), num_train=len(folder.train),
            num_validation=len(folder.validation), num_test=len(folder.test),
            heldout_source=folder.heldout_source, skipped_files=len(folder.skipped),
            train_folder=getattr(folder, "train_folder", "."),
            validation_grouping=getattr(folder, "validation_grouping", ""), sources=list(sources),
        ),
        training={**asdict(options), "epochs_run": _epochs_in_history(out / layout.HISTORY),
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


__all__ = ["train_bundle", "check_inputs", "TrainOptions", "DataError", "BundleExistsError", "ManifestError",
           "load_manifest"]
