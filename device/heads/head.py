"""The classifier head in numpy: ``probabilities = softmax(((embedding - mean) / scale) @ weights + bias)``.

:class:`Head` applies one (the bundle's own, read from ``tflite/head.npz``, or one taught on the device);
:func:`fit` fits one by softmax regression on embeddings: standardised features, L2, class-balanced loss,
full-batch Adam for a given number of steps (or an early stop on a held-out set); :func:`nearest_mean` makes
one from class means (for classes with 1-4 frames), as the same Head type. Deterministic for a seed; numpy only
(the device imports it).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np

from device.atomic import atomic_write
from device.manifest import unreadable

DEFAULT_L2 = 1e-3
DEFAULT_STEPS = 400
DEFAULT_PATIENCE = 40
LEARNING_RATE = 0.05
MAX_DIMENSIONS = 128  # wider embeddings are fitted in their first 128 principal directions (same Head after)
TEMPERATURE = 0.1  # nearest-class-mean head: cosine similarity / TEMPERATURE are its logits
ABSENT = -30.0  # the bias of a class with no training frames (in a cross-validation fold): never predicted


@dataclass
class Head:
    weights: np.ndarray  # [size, classes] float32
    bias: np.ndarray  # [classes]
    mean: np.ndarray  # [size]: subtracted from the embedding first
    scale: np.ndarray  # [size]: then divided by this

    @classmethod
    def from_dense(cls, weights, bias) -> "Head":
        """A Keras Dense layer's kernel and bias, with no standardisation (mean 0, scale 1)."""
        weights = np.asarray(weights, np.float32)
        return cls(weights, np.asarray(bias, np.float32), np.zeros(weights.shape[0], np.float32),
                   np.ones(weights.shape[0], np.float32))

    @property
    def size(self) -> int:
        return int(self.weights.shape[0])

    @property
    def classes(self) -> int:
        return int(self.weights.shape[1])

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        features = (np.asarray(embeddings, np.float32) - self.mean) / self.scale
        return features @ self.weights + self.bias

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """[N, size] or [size] embeddings -> probabilities of the same rank."""
        return softmax(self.logits(embeddings))

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, weights=self.weights, bias=self.bias, mean=self.mean, scale=self.scale)
        return buffer.getvalue()

    def save(self, path: os.PathLike) -> None:
        """Atomically and durably (device/atomic.py)."""
        atomic_write(path, self.to_bytes())

    @classmethod
    def load(cls, path: os.PathLike) -> "Head":
        """Read a head .npz; ValueError naming the file when it is not one."""
        try:
            with open(path, "rb"):  # a permission problem is said as such, not as "not a classifier head"
                pass
        except PermissionError as error:
            raise ValueError(unreadable(path, error)) from None
        try:
            with np.load(path, allow_pickle=False) as data:
                weights = np.asarray(data["weights"], np.float32)
                bias = np.asarray(data["bias"], np.float32)
                mean = np.asarray(data["mean"], np.float32) if "mean" in data else np.zeros(weights.shape[0])
                scale = np.asarray(data["scale"], np.float32) if "scale" in data else np.ones(weights.shape[0])
        except (OSError, KeyError, ValueError) as error:
            raise ValueError(f"{path} is not a classifier head ({error}). Re-convert the bundle "
                             "(python -m convert) or teach again (python -m device teach).") from None
        size = (weights.shape[0],) if weights.ndim == 2 else None
        if size is None or bias.shape != (weights.shape[1],) or mean.shape != size or scale.shape != size:
            raise ValueError(f"{path}: inconsistent head shapes (weights {weights.shape}, bias {bias.shape}, mean "
                             f"{mean.shape}, scale {scale.shape}). Re-convert the bundle or teach again.")
        return cls(weights, bias, mean.astype(np.float32), scale.astype(np.float32))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def split_heldout(labels: np.ndarray, fraction: float = 0.2, seed: int = 0) -> tuple:
    """Stratified split -> (train indices, held-out indices): about FRACTION of each class (at least one)
    held out, chosen with SEED."""
    rng = np.random.default_rng(seed)
    train, heldout = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        count = max(1, int(round(len(members) * fraction)))
        heldout.extend(members[:count])
        train.extend(members[count:])
    return np.sort(np.asarray(train, int)), np.sort(np.asarray(heldout, int))


class Problem:
    """Standardised (and, when wide, PCA-projected) features with one-hot labels and class-balanced weights:
    what every softmax fit on one training set shares, computed once.

    FEATURES [N, size]; LABELS [N]; GROUPS [N] (optional): rows of one frame (its variants) share the frame's
    weight, so a frame counts once whatever its number of variants."""

    def __init__(self, features, labels, classes: int, groups=None, max_dimensions: int = MAX_DIMENSIONS):
        features = np.asarray(features, np.float32)
        labels = np.asarray(labels, int)
        self.classes = classes
        self.mean = features.mean(axis=0)
        scale = features.std(axis=0)
        scale[scale < 1e-6] = 1.0
        self.scale = scale
        x = (features - self.mean) / self.scale
        self.basis = None
        if x.shape[1] > max_dimensions:  # a few hundred frames span far fewer directions than 512 features
            _, vectors = np.linalg.eigh(x.T.astype(np.float64) @ x)  # principal directions, smallest first
            self.basis = vectors[:, ::-1][:, :max_dimensions].astype(np.float32)  # [size, d]
            x = x @ self.basis
        self.x = x
        self.labels = labels
        self.one_hot = np.eye(classes, dtype=np.float32)[labels]
        self.share = np.ones(len(labels))  # each row's share of its frame
        if groups is not None:
            _, inverse, rows = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
            self.share = 1.0 / rows[inverse]

    def features(self, features) -> np.ndarray:
        x = (np.asarray(features, np.float32) - self.mean) / self.scale
        return x if self.basis is None else x @ self.basis

    def head(self, weights, bias) -> Head:
        """A Head on the raw embedding (the projection folded into the weights)."""
        weights = weights if self.basis is None else self.basis @ weights
        return Head(weights.astype(np.float32), np.asarray(bias, np.float32), self.mean.astype(np.float32),
                    self.scale.astype(np.float32))

    def descend(self, l2: float, steps: int, seed: int = 0):
        """Full-batch Adam on the class-balanced cross-entropy + L2; yields (step, weights, bias) after each step
        (the arrays are updated in place: copy what you keep)."""
        for step, weights, bias in self.descend_many([l2], [None], steps, seed):
            yield step, weights[:, 0], bias[0]

    def descend_many(self, l2s, subsets, steps: int, seed: int = 0):
        """Several fits in one pass (one matrix product a step for all): fit b uses L2S[b] and the rows where
        SUBSETS[b] (a boolean mask over the rows, or None: all) is true. Yields (step, weights [d, B, C],
        bias [B, C]); each fit equals a descend() on its own rows, from the same start."""
        blocks, classes = len(l2s), self.classes
        sample_weight = np.zeros((len(self.labels), blocks), np.float32)
        present = np.zeros((blocks, classes), bool)
        for block, subset in enumerate(subsets):
            share = self.share if subset is None else np.where(subset, self.share, 0.0)
            frames = np.bincount(self.labels, weights=share, minlength=classes)
            weight = share / np.maximum(frames, 1e-9)[self.labels]
            sample_weight[:, block] = weight / weight.sum()
            present[block] = frames > 0
        rng = np.random.default_rng(seed)
        start = rng.normal(0, 0.01, (self.x.shape[1], classes)).astype(np.float32)
        weights = np.repeat(start[:, None, :], blocks, axis=1)  # [d, B, C]
        bias = np.where(present, 0.0, ABSENT).astype(np.float32)
        l2 = np.asarray(l2s, np.float32)[None, :, None]
        moments = [np.zeros_like(weights), np.zeros_like(bias)]
        squares = [np.zeros_like(weights), np.zeros_like(bias)]
        rows, width = self.x.shape
        for step in range(1, steps + 1):
            logits = (self.x @ weights.reshape(width, -1)).reshape(rows, blocks, classes) + bias
            error = (softmax(logits) - self.one_hot[:, None, :]) * sample_weight[:, :, None]
            gradients = [(self.x.T @ error.reshape(rows, -1)).reshape(width, blocks, classes) + l2 * weights,
                         np.where(present, error.sum(axis=0), 0.0)]
            for index, (parameter, gradient) in enumerate(zip((weights, bias), gradients)):
                moments[index] = 0.9 * moments[index] + 0.1 * gradient
                squares[index] = 0.999 * squares[index] + 0.001 * gradient ** 2
                corrected = moments[index] / (1 - 0.9 ** step)
                parameter -= (LEARNING_RATE * corrected / (np.sqrt(squares[index] / (1 - 0.999 ** step)) + 1e-8)
                              ).astype(np.float32)
            yield step, weights, bias


def fit(features: np.ndarray, labels: np.ndarray, classes: int, heldout: tuple | None = None,
        l2: float = DEFAULT_L2, steps: int = DEFAULT_STEPS, patience: int = DEFAULT_PATIENCE,
        seed: int = 0, groups=None) -> tuple:
    """Softmax regression on FEATURES [N, size] with integer LABELS -> (Head, steps run).

    Features are standardised with the training set's mean and deviation; the loss is cross-entropy with
    each class weighted by 1/its count (so a class with many frames does not drown a rare one) plus L2 on the
    weights; full-batch Adam. Without HELDOUT, exactly STEPS steps (the count cross-validation chose); with
    HELDOUT = (features, labels), the weights with the best held-out loss are kept and fitting stops after
    PATIENCE steps without improvement."""
    problem = Problem(features, labels, classes, groups)
    if heldout is not None:
        held_x = problem.features(heldout[0])
        held_labels = np.asarray(heldout[1], int)
    best = (np.inf, None, None, 0)
    since_best = 0
    step = 0
    for step, weights, bias in problem.descend(l2, steps, seed):
        if heldout is None:
            continue
        held = softmax(held_x @ weights + bias)
        loss = -np.mean(np.log(held[np.arange(len(held_labels)), held_labels] + 1e-12))
        if loss < best[0] - 1e-6:
            best, since_best = (loss, weights.copy(), bias.copy(), step), 0
        else:
            since_best += 1
            if since_best >= patience:
                break
    if heldout is not None and best[1] is not None:
        weights, bias = best[1], best[2]
    return problem.head(weights, bias), step


def nearest_mean(features, labels, classes: int, groups=None) -> Head:
    """The imprinting-style head for a class with 1-4 frames: each class's mean embedding, centred and
    normalised, as the weights of a Dense layer with a temperature.

    logits = ((e - centre) / norm) . unit_mean_c / TEMPERATURE, where CENTRE is the mean of the class means and
    NORM the typical length of a centred embedding: for an embedding of typical length these are the cosine
    similarities to each class mean over TEMPERATURE (argmax: the nearest class mean by angle). A class with no
    frames (in a cross-validation fold) gets a bias that rules it out. Same Head type as the softmax fit, so the
    daemon serves either."""
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels, int)
    present = np.bincount(labels, minlength=classes) > 0
    means = np.zeros((classes, features.shape[1]))
    for label in np.flatnonzero(present):
        rows = labels == label
        if groups is None:
            means[label] = features[rows].mean(axis=0)
        else:  # each frame once, whatever its number of variants
            frame_means = [features[rows & (np.asarray(groups) == g)].mean(axis=0)
                           for g in np.unique(np.asarray(groups)[rows])]
            means[label] = np.mean(frame_means, axis=0)
    centre = means[present].mean(axis=0)
    centred = means - centre
    lengths = np.linalg.norm(centred, axis=1, keepdims=True)
    units = np.where(lengths > 1e-9, centred / np.maximum(lengths, 1e-9), 0.0)
    norm = float(np.mean(np.linalg.norm(features - centre, axis=1))) or 1.0
    weights = (units.T / TEMPERATURE).astype(np.float32)
    bias = np.where(present, 0.0, ABSENT).astype(np.float32)
    size = features.shape[1]
    return Head(weights, bias, centre.astype(np.float32), np.full(size, norm, np.float32))
