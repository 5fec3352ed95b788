"""The embedding output: every converted model gives the classifier head's input as well as the probabilities.

The bundle's ``model.keras`` ends in a ``Dense(classes, activation="softmax")`` layer (the reference CNN, the
small model, and backbones with a softmax head all do). :func:`two_output_saved_model` rebuilds the model with
two outputs, the probabilities and that layer's input (the embedding), and exports it as a SavedModel the
converter reads; :func:`find_head` also hands back the layer's weights, which the bundle keeps as
``tflite/head.npz`` (revision 0 of the head the device can re-fit, see device/teach/). A model without such a
layer converts as before, without an embedding (the device then says to re-convert before teaching).

:func:`output_layout` reads a converted flatbuffer's outputs: which position is which (from the signature's
output names, so it does not depend on the converter's tensor order) and each one's dtype and quantization.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROBABILITIES = "probabilities"
EMBEDDING = "embedding"


@dataclass
class HeadLayer:
    model: object  # the two-output keras.Model
    layer: str
    weights: np.ndarray
    bias: np.ndarray

    @property
    def size(self) -> int:
        return int(self.weights.shape[0])


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    return history[0] if history else None


def _is_softmax(function) -> bool:
    return getattr(function, "__name__", "") == "softmax"


def find_head(keras_model_path) -> HeadLayer | None:
    """model.keras -> its Dense softmax head and a two-output model; None (with nothing raised) when the model
    does not end in one, or has several outputs."""
    import keras

    model = keras.saving.load_model(str(keras_model_path), compile=False)
    if len(model.outputs) != 1:
        return None
    last = _producer(model.outputs[0]) or model.layers[-1]
    dense = None
    if isinstance(last, keras.layers.Dense) and _is_softmax(last.activation):
        dense = last
    elif isinstance(last, keras.layers.Activation) and _is_softmax(last.activation):
        before = _producer(last.input)
        if isinstance(before, keras.layers.Dense) and getattr(before.activation, "__name__", "") == "linear":
            dense = before
    if dense is None or not dense.use_bias:
        return None
    weights, bias = dense.get_weights()
    two = keras.Model(model.inputs, [model.outputs[0], dense.input], name=f"{model.name}_with_embedding")
    return HeadLayer(two, dense.name, np.asarray(weights, np.float32), np.asarray(bias, np.float32))


def two_output_saved_model(head: HeadLayer, folder: Path) -> Path:
    """Export the two-output model (outputs output_0: probabilities, output_1: embedding) into FOLDER."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        head.model.export(str(folder), format="tf_saved_model", verbose=False)
    return Path(folder)


def save_head(head: HeadLayer, path: Path) -> None:
    """W and b as the device reads them (device.heads.head.Head), written atomically."""
    from device.heads.head import Head

    Head.from_dense(head.weights, head.bias).save(path)


def output_layout(path, classes: int) -> dict:
    """The ModelFile fields of a .tflite's outputs: output_index/dtype/scale/zero_point for the probabilities
    and embedding_* for the embedding (embedding_index -1 when there is none)."""
    from convert.readiness import _names, _schema, load_model

    model = load_model(path)
    graph = model.subgraphs[0]
    types = _names(_schema().TensorType)
    positions = {int(index): position for position, index in enumerate(graph.outputs)}
    named = {}
    for signature in model.signatureDefs or []:
        for item in signature.outputs or []:
            name = item.name.decode() if isinstance(item.name, bytes) else item.name
            if int(item.tensorIndex) in positions:
                named[name] = positions[int(item.tensorIndex)]
    if len(graph.outputs) == 1:
        probabilities, embedding = 0, -1
    elif PROBABILITIES in named and EMBEDDING in named:
        probabilities, embedding = named[PROBABILITIES], named[EMBEDDING]
    else:  # a compiler that drops signatures: the probabilities are the output as wide as the label list
        widths = [int(graph.tensors[index].shape[-1]) for index in graph.outputs]
        probabilities = widths.index(classes) if widths.count(classes) == 1 else 0
        embedding = 1 - probabilities

    def describe(position: int, prefix: str) -> dict:
        tensor = graph.tensors[graph.outputs[position]]
        quant = tensor.quantization
        has = quant is not None and quant.scale is not None and len(quant.scale) > 0
        return {f"{prefix}_dtype": types[tensor.type].lower(),
                f"{prefix}_scale": float(quant.scale[0]) if has else 0.0,
                f"{prefix}_zero_point": int(quant.zeroPoint[0]) if has else 0}

    layout = {"output_index": probabilities, "embedding_index": embedding, **describe(probabilities, "output")}
    if embedding >= 0:
        layout.update(describe(embedding, "embedding"))
    return layout
