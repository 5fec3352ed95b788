"""What a converted model costs its user, measured on the same images as the SavedModel (a paired comparison).

Pure numpy and math (no scipy), in device/ so that both sides use it (convert/parity.py and the teach gate):

  margins(probabilities)            the float model's top-1 probability minus its runner-up's, per image
  accuracy_drop_interval(...)       the accuracy drop with an unconditional 95% confidence interval
  mcnemar_p(...)                    the exact one-sided McNemar p-value (conditional: a test, not an interval)

Of n images the converted model loses b (the SavedModel was right, it is not) and gains c (the other way
round); the drop is (b - c) / n, a difference of two paired proportions. Its interval is Tango's score
interval (Statistics in Medicine 17, 1998: 891-908), which is unconditional: it accounts for how many images
could have disagreed, not only for the b + c that did. So no disagreement on 60 images still leaves about
6 points possible (and [0, 0] never comes out), and 2 lost, 1 gained on 100 images reaches 6.1 points, where
the interval conditional on b + c (exact binomial of b among b + c, the old one) said 2.95.
"""

from __future__ import annotations

import math
from statistics import NormalDist

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


def tango_score(losses: int, gains: int, images: int, drop: float) -> float:
    """Tango's score statistic for a drop DROP (a fraction) in paired proportions: (b - c - n DROP) over its
    standard error with the rate of gains estimated by maximum likelihood under that drop. Decreasing in DROP."""
    n, b, c = images, losses, gains
    a = 2.0 * n
    linear = -b - c + (2.0 * n - b + c) * drop
    constant = -c * drop * (1.0 - drop)
    gains_rate = (-linear + math.sqrt(max(linear * linear - 4.0 * a * constant, 0.0))) / (2.0 * a)
    variance = n * (2.0 * gains_rate + drop * (1.0 - drop))
    difference = b - c - n * drop
    if variance <= 0.0:
        return 0.0 if difference == 0 else math.copysign(math.inf, difference)
    return difference / math.sqrt(variance)


def accuracy_drop_interval(losses: int, gains: int, images: int,
                           confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The accuracy drop's unconditional (Tango score) interval, in percentage points: LOSSES images the reference
    got right and the converted model wrong, GAINS the other way round, out of IMAGES."""
    if images == 0:
        return -100.0, 100.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)

    def root(target: float) -> float:  # the drop where the decreasing score equals TARGET, by bisection
        low, high = -1.0, 1.0
        for _ in range(80):
            middle = (low + high) / 2
            if tango_score(losses, gains, images, middle) > target:
                low = middle
            else:
                high = middle
        return (low + high) / 2

    return 100.0 * root(z), 100.0 * root(-z)


def mcnemar_p(losses: int, gains: int) -> float:
    """One-sided exact McNemar p-value: how likely LOSSES or more of the disagreeing images would go against the
    converted model if it were as accurate as the reference (each disagreement a fair coin)."""
    disagreeing = losses + gains
    if disagreeing == 0:
        return 1.0
    return 1.0 - _binomial_cdf(losses - 1, disagreeing, 0.5)
