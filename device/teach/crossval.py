"""Cross-validation on the data set's frames, grouped by capture burst: what chooses the fit's step count and
L2, what the teach gate compares, and what says whether more frames would still help.

    times = capture_times(root, items)             # from index.jsonl, else from the file names
    folds = assign_folds(labels, times, k=5, seed=0)
    run = search(embeddings, labels, folds, classes)  # -> CrossValidation (held-out probabilities, l2, steps,
                                                      #    learning curve)

Frames recorded in one burst (consecutive frames of a class less than BURST_GAP_S apart, at most BURST_SPAN_S
long) are near-identical: they always sit on the same side of a split, so a head is never scored on a
near-copy of a frame it was fitted on (only the two frames either side of a cut inside a long recording are
alike). A class recorded in a single burst has it cut into contiguous runs of frames (in capture order), so
neighbours still stay together; record a class in 5 or more separate takes to avoid even that. Every frame is held out exactly once; a fold's head is fitted on
the other folds' frames and all their variants, and scored on the held-out frames as recorded (no variants).
numpy only.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.heads.head import DEFAULT_L2, Problem, fit, nearest_mean, softmax

FOLDS = 5
BURST_GAP_S = 2.0
BURST_SPAN_S = 2.0
L2_GRID = (DEFAULT_L2, 1e-2, 1e-1)
CHECKPOINTS = (25, 50, 100, 150, 200, 300, 400)
FRACTIONS = (0.25, 0.5, 0.75)  # the learning curve's points (1.0 is the cross-validation itself)
CAPTURE_NAME = re.compile(r"(\d{8})-(\d{6})(?:[-_.](\d+))?.*")


@dataclass
class CrossValidation:
    probabilities: np.ndarray  # [N, classes]: each frame's, from the head fitted without its fold, with the
    #                            settings chosen without its fold's scores (nested: the figure is never the best
    #                            of the settings on the frames that score it)
    l2: float | None  # the settings for the final fit: the lowest held-out loss over all the frames
    steps: int | None
    losses: dict  # {(l2, steps): mean held-out loss}
    curve: dict | None = None  # {fraction: held-out predictions [N]} of heads fitted on that share of the frames
    held: dict | None = None  # {(l2, steps): [N, classes] held-out probabilities}: every setting's
    chosen: dict | None = None  # {fold: (l2, steps)}: the settings that scored that fold


def capture_times(root, relative_names: list) -> list:
    """Capture time (seconds) of each frame (RELATIVE_NAMES: 'class/file.jpg'): index.jsonl's record, else the
    YYYYmmdd-HHMMSS[-sequence] of the file name (the sequence orders frames within a second); None when
    neither says (a frame copied in from elsewhere: its own group)."""
    recorded = {}
    try:
        with open(Path(root) / "index.jsonl", encoding="utf-8") as stream:
            for line in stream:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("time"), (int, float)) and "file" in record:
                    recorded[str(record["file"])] = float(record["time"])
    except OSError:
        pass
    times = []
    for name in relative_names:
        if name in recorded:
            times.append(recorded[name])
            continue
        found = CAPTURE_NAME.fullmatch(Path(name).name)
        if found is None:
            times.append(None)
            continue
        try:
            stamp = calendar.timegm(time.strptime(found.group(1) + found.group(2), "%Y%m%d%H%M%S"))
        except ValueError:
            times.append(None)
            continue
        times.append(stamp + (int(found.group(3)) % 1000) * 1e-3 if found.group(3) else float(stamp))
    return times


def bursts(labels, times, gap: float = BURST_GAP_S, span: float = BURST_SPAN_S) -> np.ndarray:
    """A burst number per frame: consecutive frames of one class less than GAP seconds apart share one, for at
    most SPAN seconds (a long hold-to-record becomes several bursts); a frame without a time is its own."""
    labels = np.asarray(labels)
    group = np.zeros(len(labels), int)
    number = 0
    for label in np.unique(labels):
        members = [i for i in np.flatnonzero(labels == label)]
        timed = sorted((times[i], i) for i in members if times[i] is not None)
        previous = first = None
        for stamp, index in timed:
            if previous is None or stamp - previous >= gap or stamp - first >= span:
                number += 1
                first = stamp
            group[index] = number
            previous = stamp
        for index in members:
            if times[index] is None:
                number += 1
                group[index] = number
    return group


def assign_folds(labels, times, k: int = FOLDS, seed: int = 0) -> np.ndarray:
    """A fold number (0..k-1) per frame, per class balanced, bursts kept whole; a class recorded in one burst has
    it cut into K contiguous runs (as many as its frames when fewer). A class with fewer than K bursts is held
    out in as many folds as it has bursts."""
    labels = np.asarray(labels)
    group = bursts(labels, times)
    order_key = [(times[i] if times[i] is not None else float("inf"), i) for i in range(len(labels))]
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(labels), int)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        runs = [sorted((i for i in members if group[i] == g), key=lambda i: order_key[i])
                for g in np.unique(group[members])]
        if len(runs) == 1:  # one take: cut it into contiguous runs (its bursts' neighbours stay together)
            runs = [list(part) for part in np.array_split(runs[0], min(k, len(runs[0])))]
        shuffled = [runs[i] for i in rng.permutation(len(runs))]
        sizes = np.zeros(k)
        start = int(rng.integers(k))  # so that the classes' first folds differ
        for run in sorted(shuffled, key=len, reverse=True):
            fold = min(range(k), key=lambda f: (sizes[f], (f - start) % k))
            folds[run] = fold
            sizes[fold] += len(run)
    return folds


def _rows(embeddings, frames):
    """The training rows of FRAMES: every variant of each -> (features [M, size], frame of each row)."""
    variants = embeddings.shape[1]
    features = embeddings[frames].reshape(-1, embeddings.shape[2])
    return features, np.repeat(frames, variants)


def search(embeddings, labels, folds, classes: int, l2_grid=L2_GRID, checkpoints=CHECKPOINTS, seed: int = 0,
           fractions=FRACTIONS) -> CrossValidation:
    """Softmax regression: for each fold, fit on the other folds' frames (all variants) with each L2, and on
    FRACTIONS of them (the learning curve), all in one pass; record the held-out frames' probabilities at each
    checkpoint; pick the (L2, steps) of the lowest mean held-out loss on all the frames (ties: fewer steps,
    then the larger L2). The learning curve is read at the chosen L2 and steps."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed + 1)
    shares = tuple(fractions) + (1.0,)
    blocks = [(l2, share) for share in shares for l2 in l2_grid]
    held_probabilities = {}
    for fold in np.unique(folds):
        train, held = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        features, frames = _rows(embeddings, train)
        problem = Problem(features, labels[frames], classes, groups=frames)
        subsets = []
        for share in shares:
            kept = set()
            for label in np.unique(labels[train]):
                members = train[labels[train] == label]
                kept.update(rng.permutation(members)[:max(1, int(round(len(members) * share)))].tolist())
            subsets.append(None if share == 1.0 else np.isin(frames, sorted(kept)))
        held_x = problem.features(embeddings[held, 0])
        for step, weights, bias in problem.descend_many([l2 for l2, _ in blocks],
                                                        [subsets[shares.index(share)] for _, share in blocks],
                                                        max(checkpoints), seed):
            if step in checkpoints:
                logits = np.einsum("nd,dbc->nbc", held_x, weights) + bias
                for block, key in enumerate(blocks):
                    held_probabilities.setdefault(key + (step,), np.zeros((len(labels), classes)))[held] = softmax(
                        logits[:, block])
    held = {(l2, step): value for (l2, share, step), value in held_probabilities.items() if share == 1.0}
    frame_losses = {key: -np.log(value[np.arange(len(labels)), labels] + 1e-12) for key, value in held.items()}
    losses = {key: float(np.mean(value)) for key, value in frame_losses.items()}
    best = _best(losses)
    curve = {share: held_probabilities[(best[0], share, best[1])].argmax(axis=1) for share in fractions}
    probabilities, chosen = np.zeros((len(labels), classes)), {}
    for fold in np.unique(folds):  # nested: fold k is scored with the settings the other folds' scores chose
        outside = folds != fold
        if not outside.any():
            outside = np.ones(len(labels), bool)
        chosen[int(fold)] = _best({key: float(np.mean(value[outside])) for key, value in frame_losses.items()})
        probabilities[folds == fold] = held[chosen[int(fold)]][folds == fold]
    return CrossValidation(probabilities, best[0], best[1], losses, curve, held, chosen)


def _best(losses: dict) -> tuple:
    """The (L2, steps) of the lowest loss; ties: fewer steps, then the larger L2."""
    return min(losses, key=lambda key: (round(losses[key], 6), key[1], -key[0]))


def search_then_fit(embeddings, labels, folds, classes: int, seed: int = 0) -> tuple:
    """The teach recipe, in one place (the device's teach, train/fewshot.py, bench/teach.py): the cross-validated
    search of (L2, steps) (:func:`search`), then the final head fitted on every frame in all its looks with
    them -> (CrossValidation, Head, steps run)."""
    labels = np.asarray(labels)
    run = search(embeddings, labels, folds, classes, seed=seed)
    looks = embeddings.shape[1]
    frame_of_row = np.repeat(np.arange(len(labels)), looks)
    head, steps = fit(embeddings.reshape(-1, embeddings.shape[2]), labels[frame_of_row], classes, l2=run.l2,
                      steps=run.steps, seed=seed, groups=frame_of_row)
    return run, head, steps


def nearest_mean_predictions(embeddings, labels, folds, classes: int) -> CrossValidation:
    """The nearest-class-mean head, cross-validated the same way (a class absent from a fold's training frames
    cannot be predicted there: its single frame is scored as a miss, which is what it is)."""
    labels = np.asarray(labels)
    probabilities = np.zeros((len(labels), classes))
    for fold in np.unique(folds):
        train, held = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        features, frames = _rows(embeddings, train)
        head = nearest_mean(features, labels[frames], classes, groups=frames)
        probabilities[held] = head.probabilities(embeddings[held, 0])
    return CrossValidation(probabilities, None, None, {})
