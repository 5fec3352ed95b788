"""The classifiers. Normalisation (Rescaling 1/255) is inside every model: it takes RGB 0..255."""

from __future__ import annotations

MODELS = ("reference", "small")
# Smallest --image-size each model takes: the reference model's four (3x3 valid conv + 2x2 pool) blocks need 46
# pixels a side, the small model's two need 10. train.api checks it before training starts.
SMALLEST_IMAGE_SIZE = {"reference": 46, "small": 10}


def build_model(name: str, image_size: tuple, num_classes: int, dropout: float = 0.5):
    """reference: the 4-block CNN of DEVELOPERS.md (150x150x3 -> 64,64,128,128 filters -> Dense 512).
    small: two narrow conv blocks, for tests and quick experiments on small images."""
    import keras
    from keras import layers

    height, width = image_size
    if name == "reference":
        filters = (64, 64, 128, 128)
        dense = 512
    elif name == "small":
        filters = (8, 16)
        dense = 32
    else:
        raise ValueError(f"Unknown --model {name!r}; choose one of: {', '.join(MODELS)}.")
    smallest = SMALLEST_IMAGE_SIZE[name]
    if min(height, width) < smallest:
        raise ValueError(
            f"--image-size {height}x{width} is too small for the {name} model (needs at least {smallest} "
            f"pixels a side); use a larger --image-size or --model small."
        )
    inputs = keras.Input(shape=(height, width, 3), dtype="float32", name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale_0_255_to_0_1")(inputs)
    for block, count in enumerate(filters):
        x = layers.Conv2D(count, 3, activation="relu", name=f"conv{block + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{block + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(dense, activation="relu", name="dense")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"edgecam_{name}")


def build_augmenter(seed: int):
    """Flip, rotation and zoom, applied in the tf.data pipeline only (never inside the exported model,
    where Keras 3's export would keep applying them at inference)."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.05, fill_mode="nearest", seed=seed + 1),
            layers.RandomZoom(0.1, fill_mode="nearest", seed=seed + 2),
        ],
        name="augment",
    )
