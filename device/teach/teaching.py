"""Teach: embed a data set's frames with the bundle's model, fit a numpy head, keep it if it is no worse.

    result = teach("artifacts/rps", "data/rps-own")      # -> dict (the /api/teach answer)

Frames are decoded and resized by the device's own code (images: source, numpy bilinear, the model's input
quantization) and embedded by the model itself (its embedding output, one invoke per frame). A fifth of
each class is held out; the new head is fitted on the rest (early stop on that fifth) and both heads are
scored on it: the current head (the model's own probabilities, or the current taught revision) and the new
one. The new head becomes the next revision only when it is at least as accurate, or with ``force``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from device.layout import find_images
from device.manifest import load_manifest
from device.teach import revisions
from device.teach.head import fit, split_heldout

MIN_PER_CLASS = 5
HELDOUT_FRACTION = 0.2


class NotEnoughData(ValueError):
    """Fewer than two classes, or too few frames in a class (HTTP 409, exit 2)."""


def collect(data) -> tuple:
    """DATA's class folders -> (labels, [(class index, path)]); hidden folders (.uncertain) are skipped."""
    root = Path(data)
    if not root.is_dir():
        raise NotEnoughData(f"data set {root} does not exist: capture frames first (python -m device capture ... "
                            "or the Teach page), or point --data at a folder of class folders.")
    labels, items = [], []
    for folder in sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith(".")):
        files = find_images(folder)
        if files:
            items.extend((len(labels), path) for path in files)
            labels.append(folder.name)
    counts = {label: sum(1 for index, _ in items if index == number) for number, label in enumerate(labels)}
    if len(labels) < 2:
        raise NotEnoughData(f"{root} has {len(labels)} class(es) with frames ({counts}); teaching needs at least 2. "
                            "Record frames of at least two classes.")
    few = {label: count for label, count in counts.items() if count < MIN_PER_CLASS}
    if few:
        raise NotEnoughData(f"too few frames in {', '.join(f'{k} ({v})' for k, v in few.items())}: record at least "
                            f"{MIN_PER_CLASS} of every class (20 or more teach much better).")
    return labels, items


def embed(classifier, paths, progress=None) -> tuple:
    """Decode, preprocess and invoke each file once -> (model probabilities [N, C], embeddings [N, E])."""
    from device.sources import ImagesSource

    source = ImagesSource(paths=list(paths), loop=False)
    source.open()
    probabilities, embeddings = [], []
    for number, path in enumerate(paths):
        frame = source.decode(path)
        if frame is None:
            raise NotEnoughData(f"{path} cannot be decoded as an image: delete it and teach again.")
        own, embedding = classifier.outputs(frame)
        probabilities.append(own)
        embeddings.append(embedding)
        if progress:
            progress(number + 1, len(paths))
    return np.stack(probabilities), np.stack(embeddings)


def load_classifier_any(bundle, model: str = "int8", threads: int | None = None, state_dir=None):
    """The bundle's model with the head that serves it, as the daemon loads them (no smoothing, no threshold):
    the current taught head from its store (device/teach/revisions.py), or the bundle's own when that is damaged."""
    from device.pipeline import Classifier
    from device.runtime import load_model

    manifest = load_manifest(bundle)
    loaded = load_model(model, bundle, threads=threads, manifest=manifest)
    store = revisions.open_store(bundle, manifest, loaded.format, state_dir, loaded.sha256)
    active, _problem = revisions.serving_head(store, manifest)
    return Classifier(loaded, manifest, head=active)


def load_classifier(bundle, model: str = "int8", threads: int | None = None, state_dir=None):
    """load_classifier_any(), refusing a bundle converted without an embedding output (it cannot be taught)."""
    manifest = load_manifest(bundle)
    if manifest.embedding is None:
        raise ValueError(revisions.no_embedding_message(bundle))
    classifier = load_classifier_any(bundle, model, threads, state_dir)
    if classifier.model.embedding_index is None:
        raise ValueError(revisions.no_embedding_message(bundle))
    return classifier


def confusion(truth: np.ndarray, predicted: np.ndarray, classes: int) -> list:
    matrix = np.zeros((classes, classes), int)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix.tolist()


def teach(bundle, data, model: str = "int8", force: bool = False, seed: int = 0, threads: int | None = None,
          progress=None, state_dir=None) -> dict:
    """Fit, compare, and write a new revision when accepted -> the /api/teach answer (a dict). The revision goes
    into the model's head store: STATE_DIR (or the one device.state.device_state_dir finds), else the bundle."""
    started = time.monotonic()
    labels, items = collect(data)
    classifier = load_classifier(bundle, model, threads, state_dir)
    store = revisions.open_store(bundle, classifier.manifest, classifier.model.format, state_dir,
                                 classifier.model.sha256)
    truth = np.array([index for index, _ in items])
    own, embeddings = embed(classifier, [path for _, path in items], progress)
    embedded = time.monotonic()
    train, heldout = split_heldout(truth, HELDOUT_FRACTION, seed)
    head, steps = fit(embeddings[train], truth[train], len(labels), (embeddings[heldout], truth[heldout]),
                      seed=seed)
    new_predicted = head.probabilities(embeddings[heldout]).argmax(axis=1)
    accuracy_new = float(np.mean(new_predicted == truth[heldout]))
    current = classifier.head
    current_probabilities = own if current is None else current.head.probabilities(embeddings)
    current_labels = classifier.labels
    named = np.array([current_labels[i] for i in current_probabilities[heldout].argmax(axis=1)])
    accuracy_current = float(np.mean(named == np.array([labels[i] for i in truth[heldout]])))
    accepted = force or accuracy_new >= accuracy_current
    result = {
        "accepted": bool(accepted), "labels": labels, "accuracy_new": round(accuracy_new, 4),
        "accuracy_current": round(accuracy_current, 4), "current_revision": current.revision if current else 0,
        "heldout": int(len(heldout)), "trained": int(len(train)), "steps": int(steps),
        "confusion": {"labels": labels, "matrix": confusion(truth[heldout], new_predicted, len(labels))},
        "model": classifier.model.format, "embed_seconds": round(embedded - started, 3),
    }
    if accepted:
        result["reason"] = ("forced" if force and accuracy_new < accuracy_current else
                            f"the new head scores {accuracy_new:.1%} on the held-out fifth, the current one "
                            f"{accuracy_current:.1%}")
        meta = {key: result[key] for key in ("accuracy_new", "accuracy_current", "heldout", "trained", "confusion",
                                             "model", "steps")}
        meta.update(accuracy=result["accuracy_new"], data=str(Path(data).resolve()), frames=len(items), seed=seed,
                    forced=bool(force))
        result["revision"] = store.write_revision(head, labels, meta)
    else:
        result["reason"] = (f"refused: the new head scores {accuracy_new:.1%} on the held-out fifth, worse than the "
                            f"current head's {accuracy_current:.1%}. Record more (or cleaner) frames, or force it.")
        result["revision"] = result["current_revision"]
    result["seconds"] = round(time.monotonic() - started, 3)
    return result
