"""device/preprocess.py: the numpy resize matches tf.image.resize (bilinear, half-pixel, no antialias),
colour swap, quantization, and the whole prepare() step."""

import numpy as np
import pytest

from device import preprocess

SHAPES = [  # (source h, w) -> (target h, w): down, up, odd ratios, one axis unchanged, 1-pixel edges
    ((480, 640), (150, 150)),
    ((64, 64), (48, 48)),
    ((40, 40), (32, 32)),
    ((17, 23), (32, 32)),
    ((100, 37), (100, 50)),
    ((1, 5), (3, 4)),
    ((7, 7), (1, 1)),
]


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


@pytest.mark.parametrize("source, target", SHAPES)
def test_resize_matches_tf_image_resize(tf, source, target):
    image = np.random.default_rng(0).integers(0, 256, size=source + (3,), dtype=np.uint8)
    expected = tf.image.resize(image, target, method="bilinear", antialias=False).numpy()
    actual = preprocess.resize_bilinear(image, *target)
    assert actual.dtype == np.float32 and actual.shape == target + (3,)
    np.testing.assert_allclose(actual, expected, atol=1e-3)  # float32 rounding only


def test_resize_tables_are_cached():
    preprocess.resize_table.cache_clear()
    image = np.zeros((30, 40, 3), np.uint8)
    for _ in range(3):
        preprocess.resize_bilinear(image, 10, 10)
    info = preprocess.resize_table.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_swap_colour_reverses_channels():
    pixel = np.array([[[1, 2, 3]]], np.uint8)
    assert preprocess.swap_colour(pixel).tolist() == [[[3, 2, 1]]]


def test_quantize_fast_path_equals_general_formula():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    fast = preprocess.quantize(values, 1.0, -128, np.int8)
    general = preprocess.quantize(values.astype(np.float32), 1.0, -128, np.int8)
    assert fast.dtype == np.int8
    np.testing.assert_array_equal(fast, general)
    np.testing.assert_array_equal(fast.astype(int), values.astype(int) - 128)


def test_quantize_rounds_and_clips():
    values = np.array([0.0, 1.0, 127.6, 255.0], np.float32)
    np.testing.assert_array_equal(preprocess.quantize(values, 0.5, 10, np.uint8), [10, 12, 255, 255])
    np.testing.assert_array_equal(preprocess.quantize(values, 2.0, -128, np.int8), [-128, -128, -64, 0])
    with pytest.raises(ValueError, match="scale"):
        preprocess.quantize(values, 0.0, 0, np.int8)


def plan(dtype, swap=False, scale=0.0, zero_point=0):
    return preprocess.InputPlan(height=4, width=4, swap=swap, dtype=np.dtype(dtype), scale=scale,
                                zero_point=zero_point)


def test_prepare_at_model_size_skips_resize_and_keeps_values():
    frame = np.random.default_rng(1).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    batch = preprocess.prepare(frame, plan(np.float32))
    assert batch.shape == (1, 4, 4, 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0], frame)
    quantized = preprocess.prepare(frame, plan(np.int8, scale=1.0, zero_point=-128))
    np.testing.assert_array_equal(quantized[0].astype(int), frame.astype(int) - 128)


def test_prepare_swaps_to_bgr_when_the_manifest_says_so():
    frame = np.zeros((8, 8, 3), np.uint8)
    frame[..., 0] = 255  # pure red
    batch = preprocess.prepare(frame, plan(np.float32, swap=True))
    assert batch.shape == (1, 4, 4, 3)
    assert batch[0, ..., 2].min() == 255 and batch[0, ..., 0].max() == 0


def test_prepare_rejects_non_rgb_frames():
    with pytest.raises(ValueError, match="HxWx3"):
        preprocess.prepare(np.zeros((4, 4), np.uint8), plan(np.float32))


def test_workspace_gives_the_same_results_and_reuses_its_buffers():
    rng = np.random.default_rng(3)
    workspace = preprocess.Workspace()
    for plan_ in (plan(np.int8, scale=1.0, zero_point=-128), plan(np.uint8, scale=0.7, zero_point=5),
                  plan(np.float32, swap=True)):
        for shape in ((9, 13, 3), (4, 4, 3), (9, 13, 3)):
            frame = rng.integers(0, 256, size=shape, dtype=np.uint8)
            expected = preprocess.prepare(frame, plan_).copy()
            np.testing.assert_array_equal(preprocess.prepare(frame, plan_, workspace), expected)
    buffers = dict(workspace.buffers)
    preprocess.prepare(rng.integers(0, 256, size=(9, 13, 3), dtype=np.uint8), plan(np.float32), workspace)
    assert all(workspace.buffers[name] is buffer for name, buffer in buffers.items() if name != "batch")


@pytest.mark.parametrize("scale, zero_point, dtype", [(1.0, -128, np.int8), (1.0, 0, np.uint8), (0.5, -128, np.int8),
                                                      (2.0, 3, np.uint8), (1 / 255, -128, np.int8)])
def test_quantize_pixel_range_shortcut_equals_the_clipped_formula(scale, zero_point, dtype):
    values = preprocess.resize_bilinear(np.arange(256, dtype=np.uint8).reshape(16, 16, 1), 7, 9)
    expected = np.clip(np.rint(values / np.float32(scale) + zero_point), np.iinfo(dtype).min, np.iinfo(dtype).max)
    actual = preprocess.quantize(values, scale, zero_point, dtype, pixel_range=True)
    np.testing.assert_array_equal(actual, expected.astype(dtype))
