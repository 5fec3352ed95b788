"""Pretrained backbones for transfer learning: MobileNetV2 and MobileNetV3-Small (minimalistic) from
keras.applications, with the kit's contract kept: the model takes float32 RGB 0..255 and normalises itself
(Rescaling to MobileNet's -1..1 inside the model), and ends in a Dense softmax layer fed by the embedding
(global average pooling of the backbone's last feature map; dropout between them is identity at inference).

    image 0..255 -> Rescaling(1/127.5, -1) -> backbone(training=False) -> GlobalAveragePooling "embedding"
                 -> Dropout -> Dense softmax "probabilities"

A pretrained backbone is called with training=False, so its BatchNormalization layers stay in inference mode
while its top blocks are fine-tuned (their moving statistics never move on a small data set). With --weights
none there are no statistics to keep: BatchNorm trains as usual and every block is trained (--freeze 0).

Weights (``--weights``): ``imagenet`` (keras.applications' file, cached under ~/.keras/models; checked before
training, with a clear error when it is neither cached nor downloadable), ``none`` (random), or a PATH to a
weights file (``make weights`` writes one on a connected machine). The manifest records the origin and the
file's sha256.

Blocks (``--freeze N`` keeps blocks 0..N-1 fixed): the stem is block 0, each inverted-residual block its own,
the last 1x1 convolution the last block. The reference and small CNNs count each conv layer as a block.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Architecture:
    name: str
    alphas: tuple  # width multipliers keras.applications has ImageNet weights for
    default_alpha: float
    default_size: int
    blocks: int  # stem + inverted-residual blocks + last conv
    default_freeze: int  # blocks kept fixed in the fine-tuning phase (the top ones are trained)
    cost: str  # one line for --help: MACs and size at the default alpha and size (make bench measures it)


ARCHITECTURES = {
    "mobilenet_v2": Architecture("mobilenet_v2", (0.35, 0.5, 0.75, 1.0, 1.3, 1.4), 0.35, 128, 18, 12,
                                 "alpha 0.35 at 128 px: ~20 M multiply-adds, 0.4 M parameters; Edge TPU whole"),
    "mobilenet_v3_small": Architecture("mobilenet_v3_small", (1.0,), 1.0, 128, 12, 8,
                                       "minimalistic (ReLU, no squeeze-excite: Edge TPU friendly), 1.0 at 128 px: "
                                       "~20 M multiply-adds, 1.0 M parameters"),
}
TRANSFER_MODELS = tuple(ARCHITECTURES)
IMAGENET_SIZES = (96, 128, 160, 192, 224)
SMALLEST, LARGEST = 32, 224
WEIGHTS_CHOICES = ("imagenet", "none")  # or a path
PROBE_TIMEOUT_S = 5.0


class WeightsError(ValueError):
    """The requested weights cannot be had; the message names the fix."""


@dataclass
class WeightsSource:
    origin: str  # "imagenet", "none", "file", "bundle"; "untrained": random weights, BatchNorm as if pretrained
    path: str = ""  # the file loaded ("" for none)
    sha256: str = ""

    def keras_argument(self):
        return None if self.origin in ("none", "bundle", "untrained") else self.path


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_alpha_and_size(name: str, alpha: float, size: int, weights: str) -> None:
    arch = architecture(name)
    if not SMALLEST <= size <= LARGEST:
        raise ValueError(f"--image-size {size} is outside {SMALLEST}..{LARGEST} for {name}; "
                         f"use 96, 128, 160, 192 or 224 (the sizes ImageNet weights were trained at).")
    if weights == "imagenet":
        if alpha not in arch.alphas:
            raise ValueError(f"--alpha {alpha:g}: keras.applications has ImageNet weights for {name} only at alpha "
                             f"{', '.join(f'{a:g}' for a in arch.alphas)}. Choose one of them, or --weights none.")
        if size not in IMAGENET_SIZES:
            raise ValueError(f"--image-size {size}: with --weights imagenet use one of "
                             f"{', '.join(map(str, IMAGENET_SIZES))}, or --weights none.")
    elif not 0 < alpha <= 1.4:
        raise ValueError(f"--alpha must be in (0, 1.4], got {alpha:g}.")


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown backbone {name!r}; choose one of: {', '.join(TRANSFER_MODELS)}.")
    return ARCHITECTURES[name]


# ---- weights ------------------------------------------------------------------------------------
def imagenet_file(name: str, alpha: float, size: int) -> tuple:
    """(file name, URL) of keras.applications' no-top ImageNet weights, as keras names them."""
    if name == "mobilenet_v2":
        rows = size if size in IMAGENET_SIZES else 224
        file_name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
        return file_name, "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" + file_name
    file_name = f"weights_mobilenet_v3_small_minimalistic_224_{alpha}_float_no_top_v2.h5"
    return file_name, "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/" + file_name


def keras_cache() -> Path:
    """Where keras.utils.get_file caches downloads: $KERAS_HOME/models, else ~/.keras/models."""
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(base) / "models"


def _reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> str:
    """'' when URL answers a HEAD request within TIMEOUT seconds (proxies from the environment are used, as
    keras' own download does), else the reason."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return ""
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code} from {url}"
    except (urllib.error.URLError, OSError) as error:
        return f"{getattr(error, 'reason', error)}"


def resolve_weights(weights: str, name: str, alpha: float, size: int) -> WeightsSource:
    """Check the weights BEFORE any training starts; WeightsError says what to do when they cannot be had."""
    if weights == "none":
        return WeightsSource("none")
    if weights == "imagenet":
        file_name, url = imagenet_file(name, alpha, size)
        cached = keras_cache() / file_name
        if cached.is_file():
            return WeightsSource("imagenet", str(cached), sha256_of(cached))
        reason = _reachable(url)
        if reason:
            raise WeightsError(
                f"--weights imagenet: {file_name} is not in {cached.parent} and cannot be downloaded here "
                f"({reason}). On a machine with internet run 'make weights MODEL={name} ALPHA={alpha:g} "
                f"IMAGE_SIZE={size}' and copy the file it writes here, then pass --weights PATH; or train from "
                "random weights with --weights none (needs more images)."
            )
        return WeightsSource("imagenet", str(cached))  # keras downloads it into the cache; hashed after building
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"--weights {weights}: no such file. Pass imagenet, none, or the path of a weights file "
                           f"(.h5 or .weights.h5 for {name} alpha {alpha:g}, e.g. from 'make weights').")
    return WeightsSource("file", str(path.resolve()), sha256_of(path))


def fetch_imagenet(name: str, alpha: float, size: int, out_dir) -> Path:
    """``make weights``: download keras.applications' ImageNet weights (needs internet) and copy the file into
    OUT_DIR, named as keras names it, for ``--weights PATH`` on an offline machine."""
    import shutil

    backbone = build_backbone(name, alpha, size, WeightsSource("imagenet"))
    del backbone
    file_name, _ = imagenet_file(name, alpha, size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(keras_cache() / file_name, out / file_name)
    return out / file_name


# ---- the model ----------------------------------------------------------------------------------
def build_backbone(name: str, alpha: float, size: int, weights: WeightsSource):
    import keras

    shape = (size, size, 3)
    try:
        if name == "mobilenet_v2":
            return keras.applications.MobileNetV2(input_shape=shape, alpha=alpha, include_top=False,
                                                  weights=weights.keras_argument(), name="backbone")
        if name == "mobilenet_v3_small":
            return keras.applications.MobileNetV3Small(input_shape=shape, alpha=alpha, minimalistic=True,
                                                       include_top=False, weights=weights.keras_argument(),
                                                       include_preprocessing=False, name="backbone")
    except (ValueError, OSError) as error:
        if weights.origin == "file":
            raise WeightsError(
                f"--weights {weights.path} does not fit {name} alpha {alpha:g} ({str(error).splitlines()[0][:200]}). "
                f"Pass the file made for this architecture and alpha (make weights MODEL={name} ALPHA={alpha:g})."
            ) from None
        if weights.origin == "imagenet":
            raise WeightsError(f"--weights imagenet: the download failed ({str(error).splitlines()[0][:200]}). "
                               "Use --weights PATH to a file from 'make weights' on another machine, or --weights "
                               "none.") from None
        raise
    raise ValueError(f"Unknown backbone {name!r}; choose one of: {', '.join(TRANSFER_MODELS)}.")


def build_transfer_model(name: str, size: int, num_classes: int, alpha: float, weights: WeightsSource,
                         dropout: float = 0.2):
    import keras
    from keras import layers

    backbone = build_backbone(name, alpha, size, weights)
    inputs = keras.Input(shape=(size, size, 3), dtype="float32", name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale_0_255_to_-1_1")(inputs)
    if weights.origin == "none":  # random weights: BatchNorm must learn its statistics, so it trains as usual,
        for layer in backbone.layers:  # and with keras' default momentum: MobileNet's 0.999 needs ~1000s of steps
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = 0.9
        x = backbone(x)
    else:  # pretrained: BatchNorm in inference mode in both phases, its statistics kept
        x = backbone(x, training=False)
    x = layers.GlobalAveragePooling2D(name="embedding")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"edgecam_{name}")


# ---- blocks and freezing ------------------------------------------------------------------------
_BLOCK_PATTERNS = (
    (re.compile(r"^block_(\d+)_"), lambda m: int(m.group(1))),           # MobileNetV2 block_N_*
    (re.compile(r"^(Conv1|bn_Conv1|Conv1_relu|expanded_conv_[a-z])"), lambda m: 0),  # V2 stem + block 0
    (re.compile(r"^(Conv_1|out_relu)"), lambda m: 17),                    # V2 last 1x1 conv
    (re.compile(r"^expanded_conv_(\d+)_"), lambda m: int(m.group(1))),  # V3 block N>=1 (block 0: the stem's)
    (re.compile(r"^conv(_bn)?$"), lambda m: 0),                           # V3 stem
    (re.compile(r"^conv_1"), lambda m: 11),                               # V3 last 1x1 conv
    (re.compile(r"^(conv|pool)(\d+)$"), lambda m: int(m.group(2)) - 1),   # reference / small CNN
)
HEAD_LAYERS = ("embedding", "dropout", "probabilities", "flatten", "dense")


def _leaf_layers(model) -> list:
    import keras

    leaves = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            leaves.extend(_leaf_layers(layer))
        else:
            leaves.append(layer)
    return leaves


def layer_blocks(model) -> list:
    """[(layer, block)] for every leaf layer with weights outside the head, in graph order (block -1: the head
    or a layer without weights). Unnamed layers (activations) belong to the block before them."""
    result, current = [], 0
    for layer in _leaf_layers(model):
        if layer.name in HEAD_LAYERS:
            result.append((layer, -1))
            continue
        for pattern, block in _BLOCK_PATTERNS:
            match = pattern.match(layer.name)
            if match:
                current = block(match)
                break
        result.append((layer, current if layer.weights else -1))
    return result


def count_blocks(model) -> int:
    return 1 + max((block for _, block in layer_blocks(model)), default=-1)


def set_trainable(model, freeze_blocks: int, head_only: bool = False) -> None:
    """Train the head and the blocks from FREEZE_BLOCKS on (HEAD_ONLY: the head alone). Nested models stay
    trainable themselves so that their layers' own flags count."""
    import keras

    def unlock(layer):
        layer.trainable = True
        if isinstance(layer, keras.Model):
            for inner in layer.layers:
                unlock(inner)

    unlock(model)
    for layer, block in layer_blocks(model):
        if block >= 0 and (head_only or block < freeze_blocks):
            layer.trainable = False


def replace_head(model, num_classes: int, dropout: float = 0.2):
    """The same model with a new, freshly initialised Dense softmax head for NUM_CLASSES classes: everything up
    to the final Dense's input (the embedding) is kept, with its weights."""
    import keras
    from keras import layers

    final = model.layers[-1]
    if not isinstance(final, layers.Dense):
        raise ValueError(f"--init-from: the bundle's model ends in {type(final).__name__}, not a Dense layer; "
                         "re-export it with this edgecam (python -m train) first.")
    features = final.input
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(features)
    return keras.Model(model.inputs, outputs, name=model.name)
