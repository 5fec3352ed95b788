"""The shifted-style test: the built-in model does badly on images in train/datagen.py's camera style, and
teaching on a few dozen of them lifts accuracy on unseen ones (all real: the tiny colour bundle converted by
convert/, datagen's camera look, the TFLite interpreter, the numpy fit).

The tiny RPS bundle of conftest.py is at chance after its 3 epochs, so it cannot show a lift; the tiny colour
bundle (tests/device_bundle.py) has a real embedding. `make teach-demo` measures the same on the RPS demo
bundle with datagen's full camera style (green cloth, dim warm light, blur, noise) for the README."""

import device_bundle
import numpy as np
import pytest
import teach_bundle
from PIL import Image


def camera_style_images(root, per_class: int, seed: int):
    from train.datagen import camera_look

    rng = np.random.default_rng(seed)
    for _, path in device_bundle.draw_images(root, per_class, seed):
        camera_look(rng, Image.open(path).convert("RGB")).save(path)
    return root


def test_teaching_a_few_dozen_camera_style_images_lifts_accuracy_on_unseen_ones(tmp_path_factory, tmp_path):
    from bench.teach import light_copy
    from device.teach.evaluate import evaluate
    from device.teach.teaching import teach

    bundle = light_copy(teach_bundle.shared_teach_bundle(tmp_path_factory), tmp_path / "bundle")
    lessons = camera_style_images(tmp_path / "lessons", per_class=10, seed=21)  # 30 images to teach
    unseen = camera_style_images(tmp_path / "unseen", per_class=30, seed=22)  # 90 others, never taught
    builtin = evaluate(bundle, unseen, "int8", threads=1)
    assert builtin.accuracy <= 0.8, builtin.markdown()  # the camera's warm, dim cast fools the built-in head
    result = teach(bundle, lessons, "int8", seed=0, threads=1)
    assert result["accepted"] and result["revision"] == 1
    taught = evaluate(bundle, unseen, "int8", threads=1)
    assert taught.accuracy >= builtin.accuracy + 0.15, (builtin.accuracy, taught.accuracy)
    assert taught.head.endswith("+head1")


def test_datagen_camera_style_is_seeded_separate_and_checked(tmp_path):
    from train.datagen import generate_dataset, image_rng, render_hand

    camera = np.asarray(render_hand("rock", image_rng(7, "train", "rock", 0, "camera"), 48, style="camera"))
    again = np.asarray(render_hand("rock", image_rng(7, "train", "rock", 0, "camera"), 48, style="camera"))
    drawn = np.asarray(render_hand("rock", image_rng(7, "train", "rock", 0), 48))
    np.testing.assert_array_equal(camera, again)
    assert np.abs(camera.astype(int) - drawn.astype(int)).mean() > 10
    corner = camera[:6, :6].reshape(-1, 3).mean(axis=0)
    assert corner[1] > corner[0] and corner[1] > corner[2]  # the green cloth
    result = generate_dataset(tmp_path / "camera", 2, 1, size=32, seed=7, progress=False, workers=1, style="camera")
    assert result["reused"] is False and (tmp_path / "camera" / "train" / "paper" / "paper_0001.png").is_file()
    assert '"style": "camera"' in (tmp_path / "camera" / "dataset.json").read_text()
    with pytest.raises(ValueError, match="style must be one of drawn, camera"):
        generate_dataset(tmp_path / "bad", 2, 1, size=32, progress=False, style="sepia")
