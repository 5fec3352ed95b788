"""``--init-from BUNDLE`` with few images: start where teaching on the device ends, and train only what the data
can carry.

With fewer than FEW_PER_CLASS training images in some class (and no --freeze given: then the user's choice
stands), fine-tuning every layer from a bundle does worse
than the device's head-only fit (issue 20: 77.5% against 85.8% on the same 20 photos a class). So, before any
epoch:

1. the final Dense layer is fitted by the device's own recipe (device/teach: each image and its five variants
   embedded by the bundle's network, 5-fold cross-validation grouped by capture burst for the step count and
   L2, the head on all the training and validation images: the frames the device would teach on), and its
   weights set (the standardisation folded into them);
2. every convolution block is frozen (only the Dense layers after them train), at a tenth of --learning-rate,
   with the usual augmentation;
3. that start is scored on the validation images and saved as the best epoch, so an epoch replaces it only when
   it is better there (train/phases.py's rule). The head has seen those images, so the start's score is
   optimistic and an epoch must clearly beat it: with few images the head alone usually stays, which is the
   point - the bundle is never worse than the device's teach on the same images.

    record = start(model, folder, options)    # None: enough images, nothing changed
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FEW_PER_CLASS = 50
LEARNING_RATE_FACTOR = 0.1


def few_images(folder) -> bool:
    counts = np.bincount(np.asarray(folder.train.labels, int), minlength=len(folder.class_names))
    return int(counts.min()) < FEW_PER_CLASS


def embed(model, paths, image_size: int, flip: bool, batch: int = 64) -> np.ndarray:
    """[N, looks, size]: each image and its variants (device/teach/augment.py) through the model up to its final
    Dense layer, resized as the training pipeline resizes (bilinear)."""
    import keras
    import tensorflow as tf

    from device.teach import augment
    from train.dataset import decode_rgb

    features = keras.Model(model.inputs, model.layers[-1].input)
    names = augment.variant_names(flip)
    images = []
    for path in paths:
        frame = decode_rgb(path)
        for _, image in augment.variants(frame, names, image_size):
            images.append(tf.image.resize(tf.cast(np.ascontiguousarray(image), tf.float32),
                                          [image_size, image_size], method="bilinear").numpy())
    outputs = features.predict(np.stack(images), batch_size=batch, verbose=0)
    return outputs.reshape(len(paths), len(names), -1)


def head_fit(model, folder, image_size: int, seed: int) -> tuple:
    """The device's teach fit on the training and validation images -> (Dense kernel, bias, cross-validated
    accuracy, flip)."""
    from device.teach import crossval
    from device.teach.teaching import read_settings

    root = Path(folder.root)
    flip = read_settings(root)["flip"] if (root / "teach.json").is_file() else False
    paths = list(folder.train.paths) + list(folder.validation.paths)  # every image the device would teach on
    labels = np.asarray(list(folder.train.labels) + list(folder.validation.labels), int)
    vectors = embed(model, paths, image_size, flip)
    names = [f"{Path(path).parent.name}/{Path(path).name}" for path in paths]
    folds = crossval.assign_folds(labels, crossval.capture_times(root, names), crossval.FOLDS, seed)
    classes = len(folder.class_names)
    run, head, _ = crossval.search_then_fit(vectors, labels, folds, classes, seed=seed)
    kernel = head.weights / head.scale[:, None]
    bias = head.bias - (head.mean / head.scale) @ head.weights
    accuracy = float(np.mean(run.probabilities.argmax(axis=1) == labels))
    return kernel, bias, accuracy, flip


def start(model, folder, options) -> dict | None:
    """Steps 1-2 of the module doc when some class has few images -> what was done (None: nothing)."""
    from train.backbones import count_blocks, set_trainable

    if not few_images(folder):
        return None
    kernel, bias, accuracy, flip = head_fit(model, folder, options.image_size, options.seed)
    model.layers[-1].set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    blocks = count_blocks(model)
    options.freeze = blocks
    set_trainable(model, blocks)
    options.learning_rate *= LEARNING_RATE_FACTOR
    if options.fine_tune_learning_rate is not None:
        options.fine_tune_learning_rate *= LEARNING_RATE_FACTOR
    counts = np.bincount(np.asarray(folder.train.labels, int), minlength=len(folder.class_names))
    record = {"few_images": int(counts.min()), "head_crossval_accuracy": round(accuracy, 4), "frozen_blocks": blocks,
              "learning_rate": options.learning_rate, "flip": flip}
    print(f"init-from with few images ({int(counts.min())} in the smallest class, under {FEW_PER_CLASS}): the head "
          f"first, by the device's teach fit ({accuracy:.1%} in 5-fold cross-validation grouped by capture burst); "
          f"all {blocks} convolution blocks frozen, learning rate {options.learning_rate:g}; the head-only start is "
          "kept unless an epoch beats it on validation", flush=True)
    return record


def keep_the_start(model, validation_dataset, work: Path, state: dict) -> None:
    """Step 3: score the start on validation and save it as the best epoch so far (epoch 0)."""
    loss, accuracy = model.evaluate(validation_dataset, verbose=0)[:2]
    state.update(best_val_accuracy=float(accuracy), best_val_loss=float(loss), best_epoch=0, wait=0)
    checkpoints = work / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    model.save(checkpoints / "best.keras")
    print(f"init-from start: validation accuracy {accuracy:.4f}, loss {loss:.4f}", flush=True)
