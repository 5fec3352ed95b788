"""The conversions: the bundle's SavedModel -> TFLite flatbuffers, one per format.

The SavedModel's ``serving_default`` signature takes a batch of any size (``[None, H, W, 3]``).
Converted as is, TFLite keeps that dynamic batch as ``SHAPE``/``STRIDED_SLICE``/``PACK`` ops in
front of the classifier head and a ``-1`` in the input's shape signature; the Edge TPU compiler refuses
dynamic shapes and does not map those ops. The device feeds one frame at a time, so every format is
converted from the same signature pinned to batch 1 (``[1, H, W, 3]``): the graph is otherwise the
SavedModel's, and parity is measured against the unmodified SavedModel.

With ``embedding=True`` the SavedModel is the two-output one convert/embedding.py exports from model.keras
(``output_0`` probabilities, ``output_1`` the classifier's input); the TFLite graph then has two outputs,
named ``probabilities`` and ``embedding`` in its signature, computed by one invoke.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Callable

from convert.errors import ConvertError
from device.layout import CONVERTED_FORMATS, model_filename  # noqa: F401  (re-exported)

FORMATS = CONVERTED_FORMATS
IO_TYPES = ("int8", "uint8")
LATEST = "latest"
# FULLY_CONNECTED version 12 is dense weights quantized per output channel (TensorFlow 2.21's default for the
# dynamic format); runtimes that stop below it get per-tensor dense weights, which they run.
PER_CHANNEL_DENSE_VERSION = 12
SIGNATURE_KEY = "serving_default"




class ServingFunction:
    """The SavedModel's serving signature, loaded once, and a batch-1 view of it for the converter."""

    def __init__(self, saved_model_dir: Path, height: int, width: int, channels: int = 3,
                 embedding: bool = False):
        import tensorflow as tf

        self.path = Path(saved_model_dir)
        if not (self.path / "saved_model.pb").is_file():
            raise ConvertError(
                f"SavedModel {self.path} is missing (no saved_model.pb): the bundle is incomplete. "
                f"Re-export it with: python -m train --out {self.path.parent} --overwrite"
            )
        self.loaded = tf.saved_model.load(str(self.path))
        if SIGNATURE_KEY not in self.loaded.signatures:
            raise ConvertError(
                f"SavedModel {self.path} has no '{SIGNATURE_KEY}' signature (has: "
                f"{', '.join(self.loaded.signatures) or 'none'}). Re-export it with: python -m train ..."
            )
        self.signature = self.loaded.signatures[SIGNATURE_KEY]
        inputs = self.signature.structured_input_signature[1]
        outputs = self.signature.structured_outputs
        if len(inputs) != 1 or len(outputs) != (2 if embedding else 1):
            raise ConvertError(
                f"SavedModel {self.path}: '{SIGNATURE_KEY}' must take one image tensor and return one "
                f"probability tensor; it has inputs {sorted(inputs)} and outputs {sorted(outputs)}."
            )
        (self.input_name, input_spec), = inputs.items()
        self.output_name = "output_0" if embedding else next(iter(outputs))
        self.embedding_name = "output_1" if embedding else None
        expected = [height, width, channels]
        if input_spec.shape.rank != 4 or list(input_spec.shape)[1:] != expected:
            raise ConvertError(
                f"SavedModel {self.path} takes {input_spec.shape}, but the manifest says input "
                f"{height}x{width}x{channels}: the bundle is inconsistent. Re-export it with python -m train."
            )
        self.height, self.width, self.channels = height, width, channels

    def __call__(self, images):
        """float32 NHWC 0..255 batch -> class probabilities (numpy)."""
        import tensorflow as tf

        return self.signature(**{self.input_name: tf.constant(images, tf.float32)})[self.output_name].numpy()

    def batch_one(self):
        """A concrete function of the same graph with a static [1, H, W, C] input."""
        import tensorflow as tf

        signature, input_name, output_name = self.signature, self.input_name, self.output_name
        embedding_name = self.embedding_name
        shape = [1, self.height, self.width, self.channels]

        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="image")])
        def serve(image):
            outputs = signature(**{input_name: image})
            if embedding_name is None:
                return {"probabilities": outputs[output_name]}
            return {"probabilities": outputs[output_name], "embedding": outputs[embedding_name]}

        return serve.get_concrete_function()

    def converter(self):
        import tensorflow as tf

        return tf.lite.TFLiteConverter.from_concrete_functions([self.batch_one()], self.loaded)


def target_limits(target_runtime: str) -> dict | None:
    """--target-runtime NAME -> {op: highest version} the runtime runs (device/opversions.py); None: latest."""
    from device.opversions import MAX_OP_VERSIONS, TARGET_RUNTIMES

    if target_runtime == LATEST:
        return None
    if target_runtime not in TARGET_RUNTIMES:
        raise ConvertError(f"--target-runtime {target_runtime!r} is not one of: "
                           f"{', '.join((LATEST, *TARGET_RUNTIMES))}.")
    module, version = TARGET_RUNTIMES[target_runtime]
    return MAX_OP_VERSIONS[module][version]


def configure(converter, fmt: str, representative_dataset: Callable[[], Iterable] | None = None,
              io_type: str = "int8", target_runtime: str = LATEST):
    """Set the converter's options for one format (and the runtime it must run on) and return it."""
    import tensorflow as tf

    limits = target_limits(target_runtime)
    if fmt == "float32":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if limits is not None and limits.get("FULLY_CONNECTED", PER_CHANNEL_DENSE_VERSION) < PER_CHANNEL_DENSE_VERSION:
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True  # TF's only switch for it
    if fmt == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif fmt == "dynamic":
        pass  # weights int8, activations float: Optimize.DEFAULT without a representative dataset
    elif fmt == "int8":
        if representative_dataset is None:
            raise ValueError("int8 conversion needs a representative dataset (calibration images).")
        if io_type not in IO_TYPES:
            raise ConvertError(f"--io-type must be one of {', '.join(IO_TYPES)}, got {io_type!r}.")
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8 if io_type == "int8" else tf.uint8
        converter.inference_output_type = converter.inference_input_type
    else:
        raise ConvertError(f"Unknown format {fmt!r}; choose from {', '.join(FORMATS)}.")
    return converter


def convert(serving: ServingFunction, fmt: str, representative_dataset=None, io_type: str = "int8",
            target_runtime: str = LATEST) -> bytes:
    """One format's flatbuffer, as bytes."""
    converter = configure(serving.converter(), fmt, representative_dataset, io_type, target_runtime)
    try:
        return converter.convert()
    except Exception as error:  # the converter raises ConverterError and others, with long MLIR dumps
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        hint = (" Full-integer int8 needs every op to have an int8 kernel (TFLITE_BUILTINS_INT8); drop int8 "
                "from --formats or change the layer." if fmt == "int8" else "")
        raise ConvertError(f"The TFLite converter failed on {serving.path} for {fmt}: {first}.{hint}") from error
