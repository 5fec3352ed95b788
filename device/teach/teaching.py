"""Teach: embed a data set's frames with the bundle's model, fit a numpy head, keep it if it is no worse.

    result = teach("artifacts/rps", "data/rps-own")      # -> dict (the /api/teach answer)

Frames are decoded and resized by the device's own code (images: source, numpy bilinear, the model's input
quantization) and embedded by the model itself (its embedding output, one invoke per frame and variant:
device/teach/augment.py), once: the embeddings are cached beside the data set (device/teach/embeddings.py).

The fit (device/teach/crossval.py): 5-fold cross-validation on the frames, grouped by capture burst, chooses
the step count and L2; the final head is then fitted on all the frames. With 1-4 frames of a class, a
nearest-class-mean head instead (the same Head type). The gate compares the new head's cross-validated
predictions with the current head's predictions on frames it never saw: the bundle's own head on every frame;
a taught head by its own cross-validated predictions (kept in its revision) on the frames it was fitted on,
directly on the newer ones. The new head becomes the next revision when it is at least as accurate, or with
``force``; when the frames, their labels and the settings are those of the current head, nothing is taught.

Settings per data set (DATASET/teach.json, optional): ``{"flip": true}`` adds a horizontally flipped variant
of each frame - only for classes that look the same mirrored (not for "left"/"right" arrows).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from device import drift
from device.heads import store as revisions
from device.heads.head import nearest_mean
from device.layout import find_images
from device.manifest import load_manifest
from device.teach import advice, augment, crossval, embeddings, regionlabels

MIN_SOFTMAX = 5  # frames of every class for softmax regression; fewer: the nearest-class-mean head
SETTINGS = "teach.json"
FIT_VERSION = 2  # part of the fingerprint: a new fitting recipe is never "unchanged"
MAX_MISTAKES = 100


class NotEnoughData(ValueError):
    """Fewer than two classes, or an empty class (HTTP 409, exit 2)."""


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
    return labels, items


def collect_region(data, region) -> tuple:
    """The frames labelled for REGION (device/teach/regionlabels.py) -> (labels, [(class index, path)]), as
    collect() gives for class folders (NotEnoughData for fewer than two classes)."""
    root = Path(data)
    if not root.is_dir():
        raise NotEnoughData(f"data set {root} does not exist: record frames for region {region.name} first "
                            f"(python -m device capture --region {region.name} --label LABEL ...).")
    frames = regionlabels.read(root)
    labels = sorted({entry[region.name] for entry in frames.values() if region.name in entry})
    items = [(labels.index(entry[region.name]), root / file) for file, entry in sorted(frames.items())
             if region.name in entry]
    if len(labels) < 2:
        raise NotEnoughData(f"{root} has {len(labels)} class(es) with frames for region {region.name} "
                            f"({regionlabels.counts(root, region.name)}); teaching needs at least 2. Record frames of at least "
                            f"two classes (python -m device capture --region {region.name} --label LABEL ...).")
    return labels, items


def read_settings(data) -> dict:
    """DATASET/teach.json -> {"flip": bool}; a missing file means the defaults (no flip)."""
    path = Path(data) / SETTINGS
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"flip": False}
    except (OSError, ValueError) as error:
        raise NotEnoughData(f"{path} is unreadable ({error}): fix it (e.g. {{\"flip\": true}}) or delete it.") from None
    if not isinstance(settings, dict) or not isinstance(settings.get("flip", False), bool):
        raise NotEnoughData(f"{path}: \"flip\" must be true or false (e.g. {{\"flip\": true}}).")
    return {"flip": settings.get("flip", False)}


def embed(classifier, paths, progress=None, variants=(augment.ORIGINAL,), region=None) -> tuple:
    """Decode, preprocess and invoke each file once per variant -> (model probabilities [N, C] of the frames as
    recorded, embeddings [N, variants, E]). REGION (device/regions/__init__.py): its box of each frame, not the frame."""
    from device.sources import ImagesSource

    source = ImagesSource(paths=list(paths), loop=False)
    source.open()
    side = min(classifier.model.width, classifier.model.height)
    probabilities, vectors = [], []
    for number, path in enumerate(paths):
        frame = source.decode(path)
        if frame is None:
            raise NotEnoughData(f"{path} cannot be decoded as an image: delete it and teach again.")
        if region is not None:
            frame = region.crop(frame)
        rows = []
        for name, image in augment.variants(frame, variants, side):
            own, embedding = classifier.outputs(np.ascontiguousarray(image))
            if name == augment.ORIGINAL:
                probabilities.append(own)
            rows.append(embedding)
        vectors.append(np.stack(rows))
        if progress:
            progress(number + 1, len(paths))
    return np.stack(probabilities), np.stack(vectors)


def embed_cached(classifier, data, paths, variants, progress=None, region=None) -> tuple:
    """embed() through the cache -> (probabilities, embeddings, hashes, frames embedded now). A REGION's crops are
    cached in their own file, by frame and box (a moved box embeds again)."""
    hashes = [embeddings.frame_hash(path) for path in paths]
    path = embeddings.cache_path(data, classifier.model.sha256)
    if region is not None:
        box = ",".join(f"{value:.6f}" for value in region.box)
        hashes = [hashlib.sha256(f"{frame} {box}".encode()).hexdigest()[:32] for frame in hashes]
        path = path.with_name(f"region-{region.name}.npz")
    cached = embeddings.load(path, variants)
    missing = [i for i, frame in enumerate(hashes) if frame not in cached]
    if missing:
        own, vectors = embed(classifier, [paths[i] for i in missing], progress, variants, region)
        for slot, index in enumerate(missing):
            cached[hashes[index]] = (own[slot], vectors[slot])
        kept = {frame: cached[frame] for frame in set(hashes)}  # frames deleted since are dropped
        try:
            embeddings.save(path, kept, variants)
        except OSError:  # a full or read-only disk: teaching still works, the next one embeds again
            pass
    own = np.stack([cached[frame][0] for frame in hashes])
    vectors = np.stack([cached[frame][1] for frame in hashes])
    return own, vectors, hashes, len(missing)


def load_classifier_any(bundle, model: str = "int8", threads: int | None = None, state_dir=None, region=None):
    """The bundle's model with the head that serves it, as the daemon loads them (no smoothing, no threshold):
    the current taught head from its store (device/heads/store.py), or the bundle's own when that is damaged.
    REGION: that region's head (device/regions/serve.py), the bundle's own when it has none."""
    from device.pipeline import Classifier
    from device.runtime import load_model

    manifest = load_manifest(bundle)
    loaded = load_model(model, bundle, threads=threads, manifest=manifest)
    store = revisions.open_store(bundle, manifest, loaded.format, state_dir, loaded.sha256)
    if region is not None:
        from device.regions.serve import region_store

        store = region_store(store, region.name)
    active, _problem = revisions.serving_head(store, manifest)
    return Classifier(loaded, manifest, head=active)


def load_classifier(bundle, model: str = "int8", threads: int | None = None, state_dir=None, region=None):
    """load_classifier_any(), refusing a bundle converted without an embedding output (it cannot be taught)."""
    manifest = load_manifest(bundle)
    if manifest.embedding is None:
        raise ValueError(revisions.no_embedding_message(bundle))
    classifier = load_classifier_any(bundle, model, threads, state_dir, region)
    if classifier.model.embedding_index is None:
        raise ValueError(revisions.no_embedding_message(bundle))
    return classifier


def confusion(truth: np.ndarray, predicted: np.ndarray, classes: int) -> list:
    matrix = np.zeros((classes, classes), int)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix.tolist()


def current_predictions(classifier, own, vectors, hashes, labels) -> tuple:
    """The current head's probabilities for LABELS on frames it never saw -> ([N, len(labels)], its predicted
    class per frame (-1: a label the data set does not have), how they were obtained). A taught head's own cross-validated predictions stand in for the frames it was
    fitted on."""
    current = classifier.head
    names = list(classifier.labels)
    if current is None:
        probabilities, how = own, "the bundle's own head on every frame"
    else:
        probabilities = current.head.probabilities(vectors[:, 0])
        record = current.meta.get("crossval")
        if isinstance(record, dict) and isinstance(record.get("probabilities"), dict):
            stored = record["probabilities"]
            names = list(record.get("labels", names))
            probabilities = np.stack([np.asarray(stored[h], np.float64) if h in stored else probabilities[i]
                                      for i, h in enumerate(hashes)]) if names == list(classifier.labels) else None
            if probabilities is None:  # cannot happen for revisions this code wrote: labels are the head's
                probabilities = current.head.probabilities(vectors[:, 0])
                names = list(classifier.labels)
            seen = sum(h in stored for h in hashes)
            how = (f"head revision {current.revision}: its own cross-validated predictions on the {seen} frames it "
                   f"was fitted on, directly on the {len(hashes) - seen} newer ones")
        else:
            how = (f"head revision {current.revision} directly (it predates cross-validation, so on frames it may "
                   "have been fitted on: optimistic)")
    mapped = np.zeros((len(hashes), len(labels)))
    for column, label in enumerate(labels):
        if label in names:
            mapped[:, column] = probabilities[:, names.index(label)]
    index = {label: column for column, label in enumerate(labels)}
    predicted = np.array([index.get(names[best], -1) for best in np.asarray(probabilities).argmax(axis=1)])
    return mapped, predicted, how


def compare_paired(truth, new, current) -> dict:
    """The new head against the current one on the same frames: frames it loses (the current head right, the new
    one wrong), frames it gains, and the accuracy drop's unconditional 95% interval in points (device/paired.py;
    negative: the new head is better)."""
    from device.paired import accuracy_drop_interval

    truth, new, current = np.asarray(truth), np.asarray(new), np.asarray(current)
    lost = int(np.sum((current == truth) & (new != truth)))
    gained = int(np.sum((current != truth) & (new == truth)))
    low, high = accuracy_drop_interval(lost, gained, len(truth))
    return {"lost": lost, "gained": gained, "drop_interval": [round(low, 2), round(high, 2)]}


def fingerprint(hashes, truth, labels, settings, model_sha256: str, seed: int) -> str:
    frames = sorted(f"{h} {labels[t]}" for h, t in zip(hashes, truth))
    text = json.dumps({"frames": frames, "settings": settings, "model": model_sha256, "seed": seed,
                       "version": FIT_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def teach(bundle, data, model: str = "int8", force: bool = False, seed: int = 0, threads: int | None = None,
          progress=None, state_dir=None, region=None) -> dict:
    """Fit, compare, and write a new revision when accepted -> the /api/teach answer (a dict). The revision goes
    into the model's head store: STATE_DIR (or the one device.state.device_state_dir finds), else the bundle.
    REGION (device/regions/__init__.py): that region's frames (device/teach/regionlabels.py), cropped to its box, into
    its own head store."""
    started = time.monotonic()
    labels, items = collect(data) if region is None else collect_region(data, region)
    settings = read_settings(data)
    if region is not None:
        settings = dict(settings, region=region.name, box=list(region.box))
    classifier = load_classifier(bundle, model, threads, state_dir, region)
    store = revisions.open_store(bundle, classifier.manifest, classifier.model.format, state_dir,
                                 classifier.model.sha256)
    if region is not None:
        from device.regions.serve import region_store

        store = region_store(store, region.name)
    truth = np.array([index for index, _ in items])
    paths = [path for _, path in items]
    relative = [path.relative_to(Path(data)).as_posix() for path in paths]
    variants = augment.variant_names(settings["flip"])
    own, vectors, hashes, embedded_now = embed_cached(classifier, data, paths, variants, progress, region)
    embedded = time.monotonic()
    stamp = fingerprint(hashes, truth, labels, settings, classifier.model.sha256, seed)
    current_revision = classifier.head.revision if classifier.head is not None else 0
    base = {"labels": labels, "current_revision": current_revision, "model": classifier.model.format,
            "frames": len(items), "embedded": embedded_now, "cached": len(items) - embedded_now,
            "variants": list(variants), "embed_seconds": round(embedded - started, 3)}
    if not force and classifier.head is not None and classifier.head.meta.get("fingerprint") == stamp:
        meta = classifier.head.meta
        return dict(base, accepted=False, unchanged=True, revision=current_revision,
                    **{key: meta.get(key) for key in ("accuracy_new", "accuracy_current", "heldout", "trained",
                                                      "steps", "confusion", "method", "validation", "per_class",
                                                      "advice", "learning_curve", "l2")},
                    mistakes=meta.get("mistakes", []),
                    reason="nothing changed since head revision "
                           f"{current_revision} (same frames, labels and settings): nothing taught.",
                    seconds=round(time.monotonic() - started, 3))

    counts = np.bincount(truth, minlength=len(labels))
    folds = crossval.assign_folds(truth, crossval.capture_times(data, relative), crossval.FOLDS, seed)
    all_rows = vectors.reshape(-1, vectors.shape[2])
    frame_of_row = np.repeat(np.arange(len(items)), vectors.shape[1])
    curve = None
    if counts.min() >= MIN_SOFTMAX:
        method = "softmax"
        run, head, steps = crossval.search_then_fit(vectors, truth, folds, len(labels), seed=seed)
        curve = run.curve
    else:
        method = "nearest-mean"
        run = crossval.nearest_mean_predictions(vectors, truth, folds, len(labels))
        head, steps = nearest_mean(all_rows, truth[frame_of_row], len(labels), groups=frame_of_row), 0
    predicted = run.probabilities.argmax(axis=1)
    accuracy_new = float(np.mean(predicted == truth))
    current, current_predicted, how = current_predictions(classifier, own, vectors, hashes, labels)
    paired = compare_paired(truth, predicted, current_predicted)
    accuracy_current = float(np.mean(current_predicted == truth))
    accepted = force or paired["gained"] >= paired["lost"]
    folds_used = len(np.unique(folds))
    validation = (f"{folds_used}-fold cross-validation grouped by capture burst, {len(items)} frames "
                  f"({len(variants) - 1} variants each in the fits, none in the scoring; each fold scored with "
                  f"the settings the other folds chose); the new head is "
                  f"{'a nearest-class-mean head' if method == 'nearest-mean' else 'softmax regression'} fitted "
                  f"on all of them; the current head: {how}; paired on the same frames")
    rows = advice.per_class(labels, truth, predicted, curve)
    serving = run.probabilities if accepted else current
    wrong = np.flatnonzero((predicted if accepted else current_predicted) != truth)
    wrong = wrong[np.argsort(serving[wrong, truth[wrong]], kind="stable")]
    result = dict(base, **{
        "accepted": bool(accepted), "unchanged": False, "method": method, "validation": validation,
        "accuracy_new": round(accuracy_new, 4), "accuracy_current": round(accuracy_current, 4),
        "heldout": len(items), "trained": len(items), "steps": int(steps), "l2": run.l2,
        "confusion": {"labels": labels, "matrix": confusion(truth, predicted, len(labels))},
        "per_class": rows, "advice": advice.advise(rows, method, MIN_SOFTMAX),
        "learning_curve": advice.curve_points(truth, predicted, curve, labels),
        "mistakes": [relative[i] for i in wrong[:MAX_MISTAKES]], "paired": paired,
        "fit_seconds": round(time.monotonic() - embedded, 3),
    })

    def recheck(now: int) -> tuple:
        """Under the store's lock: compare again when another teach committed meanwhile."""
        if now == current_revision:
            return True, {}
        from types import SimpleNamespace

        active = store.load_revision(now) if now else None
        view = SimpleNamespace(head=active, labels=active.labels if active else classifier.manifest.labels)
        _, now_predicted, now_how = current_predictions(view, own, vectors, hashes, labels)
        result.update(current_revision=now, paired=compare_paired(truth, predicted, now_predicted),
                      accuracy_current=round(float(np.mean(now_predicted == truth)), 4),
                      validation=f"{validation.rsplit('; the current head: ', 1)[0]}; the current head (revision "
                                 f"{now}, committed while this teach ran): {now_how}; paired on the same frames")
        keep = force or result["paired"]["gained"] >= result["paired"]["lost"]
        return keep, {key: result[key] for key in ("accuracy_current", "validation", "paired")}

    if accepted:
        result["reason"] = ("forced" if force and accuracy_new < accuracy_current else
                            f"the new head scores {accuracy_new:.1%} in cross-validation, the current one "
                            f"{accuracy_current:.1%} on frames it never saw")
        meta = {key: result[key] for key in ("accuracy_new", "accuracy_current", "heldout", "trained", "confusion",
                                             "model", "steps", "l2", "method", "validation", "per_class", "advice",
                                             "learning_curve", "mistakes", "paired")}
        meta.update(accuracy=result["accuracy_new"], data=str(Path(data).resolve()), seed=seed, forced=bool(force),
                    frames=len(items), fingerprint=stamp, settings=settings,
                    crossval={"labels": labels, "probabilities": {h: [round(float(p), 4) for p in row]
                                                                  for h, row in zip(hashes, run.probabilities)}})
        reference = drift.make_reference(vectors[:, 0], truth, run.probabilities.max(axis=1),
                                         f"the {len(items)} frames of {Path(data).resolve()} the head was fitted on")
        result["revision"] = store.write_revision(head, labels, meta,
                                                  {drift.REFERENCE_FILE: drift.to_bytes({"": reference})},
                                                  decide=recheck)
        if result["revision"] is None:  # another teach committed a head this one does not beat
            result.update(accepted=False, revision=result["current_revision"], reason=(
                f"refused: head revision {result['current_revision']} was committed while this teach ran and "
                f"scores {result['accuracy_current']:.1%} on these frames, better than the new head's "
                f"{accuracy_new:.1%}. Teach again or force it."))
        elif result["current_revision"] != current_revision:
            result["reason"] += (f"; head revision {result['current_revision']}, committed while this teach ran, "
                                 f"{result['accuracy_current']:.1%} on the same frames")
    else:
        result["reason"] = (f"refused: the new head scores {accuracy_new:.1%} in cross-validation, worse than the "
                            f"current head's {accuracy_current:.1%} on frames it never saw. Record more (or cleaner) "
                            "frames, or force it.")
        result["revision"] = current_revision
    result["seconds"] = round(time.monotonic() - started, 3)
    return result
