"""Model output -> result, in pure numpy: arrays in, arrays or plain values out (no interpreter here)."""

from __future__ import annotations

from collections import deque
from itertools import islice

import numpy as np

UNKNOWN = "unknown"


def dequantize(raw: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Quantized int8/uint8 output -> float32 probabilities; float outputs pass through as float32."""
    if raw.dtype.kind in "iu":
        if scale <= 0:
            raise ValueError(f"the model's output is {raw.dtype} but its quantization scale is {scale}")
        return (raw.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)
    return raw.astype(np.float32, copy=False)


def top_k(probabilities: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first (ties: the lower index first)."""
    k = max(1, min(int(k), probabilities.shape[-1]))
    return np.argsort(-probabilities, kind="stable")[:k]


def apply_threshold(label: str, confidence: float, threshold: float) -> str:
    """The label, or ``unknown`` when the confidence is below the threshold."""
    return label if confidence >= threshold else UNKNOWN


class Smoother:
    """Temporal smoothing: the mean of the last ``window`` probability vectors (a bounded deque)."""

    def __init__(self, window: int):
        if int(window) < 1:
            raise ValueError(f"smoothing window must be at least 1 frame, got {window}")
        self.window = int(window)
        self.history: deque = deque(maxlen=self.window)

    def update(self, probabilities: np.ndarray) -> np.ndarray:
        probabilities = np.asarray(probabilities, dtype=np.float32)
        if self.window == 1:
            return probabilities
        if self.history and self.history[0].shape != probabilities.shape:
            self.reset()  # a reloaded model with other labels
        self.history.append(probabilities)
        if len(self.history) == 1:
            return probabilities
        total = self.history[0] + self.history[1]  # a few tiny adds: cheaper than stacking
        for item in islice(self.history, 2, None):
            total += item
        total /= np.float32(len(self.history))
        return total

    def reset(self) -> None:
        self.history.clear()


def summarise(probabilities: np.ndarray, frame_probabilities: np.ndarray, labels: list, k: int,
              threshold: float) -> dict:
    """The result fields that depend on the output alone: label (or unknown), confidence, probabilities,
    top_k, raw_label (this frame's own top-1, before smoothing and threshold)."""
    order = top_k(probabilities, k)
    best = int(order[0])
    confidence = float(probabilities[best])
    values = probabilities.tolist()
    return {
        "label": apply_threshold(labels[best], confidence, threshold),
        "confidence": round(confidence, 4),
        "probabilities": {label: round(value, 4) for label, value in zip(labels, values)},
        "top_k": [[labels[i], round(values[i], 4)] for i in order.tolist()],
        "raw_label": labels[int(np.argmax(frame_probabilities))],
    }
