"""What a converted model costs its user, measured on the same images as the SavedModel (a paired comparison).

Pure numpy and math (no scipy), so any side can use it:

  margins(probabilities)            the float model's top-1 probability minus its runner-up's, per image
  accuracy_drop_interval(...)       the accuracy drop with an exact 95% confidence interval

The interval is the exact binomial one behind McNemar's test. Only the images the two models answer
differently say anything about the drop: of those m images the converted model loses b (the SavedModel was
right) and gains c (it was wrong), m = b + c. Given m, b is binomial(m, q); the drop is (b - c) / n =
(m / n) (2q - 1), so the Clopper-Pearson interval of q gives the drop's interval. With no disagreement at all
the interval is [0, 0]: on these images the two models are the same classifier.
"""

from __future__ import annotations

import math

import numpy as np

CONFIDENCE = 0.95


def margins(probabilities: np.ndarray) -> np.ndarray:
    """Per image: the largest class probability minus the second largest (1.0 for a single class)."""
    probabilities = np.asarray(probabilities, np.float64)
    if probabilities.shape[1] < 2:
        return np.ones(len(probabilities))
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0]


def _binomial_cdf(k: int, n: int, q: float) -> float:
    """P(X <= k) for X ~ binomial(n, q), summed in log space (no overflow for thousands of images)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if q <= 0.0:
        return 1.0
    if q >= 1.0:
        return 0.0
    i = np.arange(k + 1)
    log_terms = (math.lgamma(n + 1) - np.array([math.lgamma(j + 1) + math.lgamma(n - j + 1) for j in i])
                 + i * math.log(q) + (n - i) * math.log1p(-q))
    return float(min(1.0, np.exp(log_terms).sum()))


def _solve(function, target: float) -> float:
    """q in [0, 1] where the decreasing FUNCTION(q) equals TARGET, by bisection (to ~1e-12)."""
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if function(middle) > target:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def clopper_pearson(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact (Clopper-Pearson) two-sided interval of a binomial proportion."""
    if trials == 0:
        return 0.0, 1.0
    tail = (1 - confidence) / 2
    lower = 0.0 if successes == 0 else _solve(lambda q: _binomial_cdf(successes - 1, trials, q), 1 - tail)
    upper = 1.0 if successes == trials else _solve(lambda q: _binomial_cdf(successes, trials, q), tail)
    return lower, upper


def accuracy_drop_interval(losses: int, gains: int, images: int,
                           confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The accuracy drop's exact interval, in percentage points: LOSSES images the reference got right and the
    converted model wrong, GAINS the other way round, out of IMAGES."""
    disagreeing = losses + gains
    if disagreeing == 0 or images == 0:
        return 0.0, 0.0
    lower, upper = clopper_pearson(losses, disagreeing, confidence)
    scale = 100.0 * disagreeing / images
    return scale * (2 * lower - 1), scale * (2 * upper - 1)


def mcnemar_p(losses: int, gains: int) -> float:
    """One-sided exact McNemar p-value: how likely LOSSES or more of the disagreeing images would go against the
    converted model if it were as accurate as the reference (each disagreement a fair coin)."""
    disagreeing = losses + gains
    if disagreeing == 0:
        return 1.0
    return 1.0 - _binomial_cdf(losses - 1, disagreeing, 0.5)
