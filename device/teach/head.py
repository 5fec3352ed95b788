"""The classifier head in numpy: ``probabilities = softmax(((embedding - mean) / scale) @ weights + bias)``.

:class:`Head` applies one (the bundle's own, read from ``tflite/head.npz``, or one taught on the device);
:func:`fit` fits one by softmax regression on embeddings: standardised features, L2, class-balanced loss,
full-batch Adam, early stop on a held-out set; deterministic for a seed. numpy only (the device imports it).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.manifest import unreadable

DEFAULT_L2 = 1e-3
DEFAULT_STEPS = 400
DEFAULT_PATIENCE = 40
LEARNING_RATE = 0.05


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
        """Atomically (temporary file + rename)."""
        path = Path(path)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        temporary.write_bytes(self.to_bytes())
        os.replace(temporary, path)

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


def fit(features: np.ndarray, labels: np.ndarray, classes: int, heldout: tuple | None = None,
        l2: float = DEFAULT_L2, steps: int = DEFAULT_STEPS, patience: int = DEFAULT_PATIENCE,
        seed: int = 0) -> tuple:
    """Softmax regression on FEATURES [N, size] with integer LABELS -> (Head, steps run).

    Features are standardised with the training set's mean and deviation; the loss is cross-entropy with
    each class weighted by 1/its count (so a class with many frames does not drown a rare one) plus L2 on the
    weights; full-batch Adam. With HELDOUT = (features, labels), the weights with the best held-out loss are
    kept and fitting stops after PATIENCE steps without improvement."""
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels, int)
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale < 1e-6] = 1.0
    x = (features - mean) / scale
    one_hot = np.eye(classes)[labels]
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    sample_weight = (1.0 / np.maximum(counts, 1))[labels]
    sample_weight /= sample_weight.sum()
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 0.01, (x.shape[1], classes))
    bias = np.zeros(classes)
    moments = [np.zeros_like(weights), np.zeros_like(bias)]
    squares = [np.zeros_like(weights), np.zeros_like(bias)]
    if heldout is not None:
        held_x = (np.asarray(heldout[0], np.float64) - mean) / scale
        held_labels = np.asarray(heldout[1], int)
    best = (np.inf, weights.copy(), bias.copy())
    since_best = 0
    step = 0
    for step in range(1, steps + 1):
        probabilities = softmax(x @ weights + bias)
        error = (probabilities - one_hot) * sample_weight[:, None]
        gradients = [x.T @ error + l2 * weights, error.sum(axis=0)]
        for index, (parameter, gradient) in enumerate(zip((weights, bias), gradients)):
            moments[index] = 0.9 * moments[index] + 0.1 * gradient
            squares[index] = 0.999 * squares[index] + 0.001 * gradient ** 2
            corrected = moments[index] / (1 - 0.9 ** step)
            parameter -= LEARNING_RATE * corrected / (np.sqrt(squares[index] / (1 - 0.999 ** step)) + 1e-8)
        if heldout is None:
            continue
        held = softmax(held_x @ weights + bias)
        loss = -np.mean(np.log(held[np.arange(len(held_labels)), held_labels] + 1e-12))
        if loss < best[0] - 1e-6:
            best, since_best = (loss, weights.copy(), bias.copy()), 0
        else:
            since_best += 1
            if since_best >= patience:
                break
    if heldout is not None:
        weights, bias = best[1], best[2]
    head = Head(weights.astype(np.float32), bias.astype(np.float32), mean.astype(np.float32),
                scale.astype(np.float32))
    return head, step
