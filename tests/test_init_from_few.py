"""``python -m train --init-from BUNDLE`` with few images (issue 20.6): the head first by the device's own teach
fit, the convolutions frozen, and the start kept unless an epoch beats it on validation, so the host path is at
least as accurate as ``python -m device teach`` on the same images. Real TensorFlow training, real conversion,
both bundles scored on the same unseen images through the device's int8 path."""

import shutil

import device_bundle
import numpy as np


def test_init_from_with_few_images_starts_from_the_head_fit_and_is_no_worse_than_teaching(tiny_bundle, tmp_path,
                                                                                        capsys):
    import keras

    from convert.api import convert_bundle
    from device.teach.evaluate import evaluate
    from device.teach.teaching import teach
    from train.api import train_bundle

    def converted(source, destination):
        shutil.copytree(source, destination, ignore=shutil.ignore_patterns("checkpoints", "logs"))
        convert_bundle(destination, formats="int8", calibration_dir=data / "train", skip_parity=True,
                       progress=False, log=lambda message: None)
        return destination

    data = tmp_path / "few"  # the colour task under the tiny hand model's class names: 8 images a class
    device_bundle.draw_images(data / "train", 8, seed=31)
    device_bundle.draw_images(data / "test", 4, seed=32)
    unseen = tmp_path / "unseen"
    device_bundle.draw_images(unseen, 30, seed=33)

    taught = converted(tiny_bundle, tmp_path / "taught")
    builtin = evaluate(taught, unseen, "int8", threads=1).accuracy
    teach(taught, data / "train", "int8", force=True, threads=1)
    on_device = evaluate(taught, unseen, "int8", threads=1).accuracy

    out = train_bundle(data, tmp_path / "host", init_from=str(tiny_bundle), epochs=3, batch_size=8, seed=0,
                       verbose=0)
    printed = capsys.readouterr().out
    assert "init-from with few images (7 in the smallest class, under 50)" in printed
    assert "all 2 convolution blocks frozen" in printed and "init-from start: validation accuracy" in printed
    before = keras.models.load_model(tiny_bundle / "model.keras", compile=False)
    after = keras.models.load_model(out / "model.keras", compile=False)
    for name in ("conv1", "conv2"):  # frozen: what 24 images cannot carry is left as it was
        np.testing.assert_array_equal(after.get_layer(name).get_weights()[0], before.get_layer(name).get_weights()[0])
    host = evaluate(converted(out, tmp_path / "host-converted"), unseen, "int8", threads=1).accuracy
    assert on_device >= builtin + 0.2, (builtin, on_device)  # teaching had something to learn
    assert host >= on_device, (builtin, on_device, host)
