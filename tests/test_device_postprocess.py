"""device/postprocess.py: pure numpy output handling, no interpreter."""

import numpy as np
import pytest

from device import postprocess

LABELS = ["paper", "rock", "scissors"]


def test_dequantize_int8_and_float():
    raw = np.array([-128, 0, 127], np.int8)
    np.testing.assert_allclose(postprocess.dequantize(raw, 1 / 256, -128), [0.0, 0.5, 255 / 256])
    floats = np.array([0.2, 0.8], np.float32)
    assert postprocess.dequantize(floats, 0.0, 0) is floats
    with pytest.raises(ValueError, match="scale"):
        postprocess.dequantize(raw, 0.0, 0)


def test_top_k_orders_largest_first_and_clamps_k():
    values = np.array([0.1, 0.6, 0.3])
    assert postprocess.top_k(values, 2).tolist() == [1, 2]
    assert postprocess.top_k(values, 10).tolist() == [1, 2, 0]
    assert postprocess.top_k(np.array([0.5, 0.5]), 1).tolist() == [0]  # ties: lower index


def test_threshold_gives_unknown_below():
    assert postprocess.apply_threshold("rock", 0.49, 0.5) == postprocess.UNKNOWN
    assert postprocess.apply_threshold("rock", 0.5, 0.5) == "rock"


def test_smoother_is_the_mean_of_the_last_n_frames_and_bounded():
    smoother = postprocess.Smoother(3)
    frames = [np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.array([0.0, 1.0])]
    outputs = [smoother.update(f) for f in frames]
    np.testing.assert_allclose(outputs[0], [1.0, 0.0])
    np.testing.assert_allclose(outputs[1], [0.5, 0.5])
    np.testing.assert_allclose(outputs[2], [1 / 3, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose(outputs[3], [0.0, 1.0])  # the first frame has left the window
    for _ in range(1000):
        smoother.update(frames[0])
    assert len(smoother.history) == 3
    smoother.update(np.array([0.2, 0.3, 0.5]))  # a reloaded model with more classes: starts afresh
    assert len(smoother.history) == 1
    with pytest.raises(ValueError, match="at least 1"):
        postprocess.Smoother(0)


def test_summarise_builds_the_result_fields():
    smoothed = np.array([0.2, 0.7, 0.1], np.float32)
    frame = np.array([0.6, 0.3, 0.1], np.float32)
    result = postprocess.summarise(smoothed, frame, LABELS, k=2, threshold=0.5)
    assert result["label"] == "rock" and result["raw_label"] == "paper"
    assert result["confidence"] == pytest.approx(0.7)
    assert result["top_k"] == [["rock", pytest.approx(0.7)], ["paper", pytest.approx(0.2)]]
    assert set(result["probabilities"]) == set(LABELS)
    assert postprocess.summarise(smoothed, frame, LABELS, k=2, threshold=0.8)["label"] == "unknown"
