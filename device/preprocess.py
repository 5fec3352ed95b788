"""Frame -> model input, in pure numpy, exactly as the manifest says.

Resize: bilinear with half-pixel centres and no antialiasing, the same arithmetic as
``tf.image.resize(method="bilinear", antialias=False)`` (interpolate along x, then along y, in float32).
The index and weight tables for each (source shape, target shape) are computed once and cached, so a
frame costs a gather of its 2x2 neighbourhoods and two lerps (about 0.25 ms for 640x480 -> 150x150 on
one x86 core). Frames already at the model's size skip
the resize altogether.

Colour: frames arrive RGB (every source converts); ``colour_order: BGR`` in the manifest swaps them.
Quantization: int8/uint8 inputs are quantized with the model's input scale and zero point.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class ResizeTable:
    rows: np.ndarray  # (2*out_h,) source rows: the upper neighbour of each output row, then the lower
    left: np.ndarray  # (out_w*C,) flat (column, channel) offsets of each output value's left neighbour
    right: np.ndarray  # (out_w*C,) the same for the right neighbour
    x_weight: np.ndarray  # (out_w*C,) float32, each column's lerp repeated per channel
    y_weight: np.ndarray  # (out_h, 1) float32


def _axis(in_size: int, out_size: int):
    """TensorFlow's half-pixel-centre source coordinates: (lower, upper, lerp) for each output index."""
    scale = np.float32(in_size) / np.float32(out_size)
    centres = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(centres)
    lower = np.maximum(floor, 0).astype(np.intp)
    upper = np.clip(np.ceil(centres), 0, in_size - 1).astype(np.intp)
    return lower, upper, (centres - floor).astype(np.float32)


@lru_cache(maxsize=16)
def resize_table(in_height: int, in_width: int, out_height: int, out_width: int, channels: int = 3) -> ResizeTable:
    top, bottom, y_lerp = _axis(in_height, out_height)
    left, right, x_lerp = _axis(in_width, out_width)
    offsets = np.arange(channels)
    return ResizeTable(rows=np.concatenate([top, bottom]),
                       left=(left[:, None] * channels + offsets).ravel(),
                       right=(right[:, None] * channels + offsets).ravel(),
                       x_weight=np.repeat(x_lerp, channels), y_weight=y_lerp.reshape(-1, 1))


class Workspace:
    """Reusable per-frame buffers for one thread. Allocating a few hundred kB per frame costs page faults
    (glibc hands large blocks back to the kernel on free), which on small boards and VMs can cost more
    than the arithmetic; a workspace allocates once per frame shape. Arrays returned with a workspace are
    views into it, valid until the next call that uses the same workspace."""

    def __init__(self):
        self.buffers: dict = {}

    def get(self, name: str, shape: tuple, dtype) -> np.ndarray:
        buffer = self.buffers.get(name)
        if buffer is None or buffer.shape != shape or buffer.dtype != dtype:
            buffer = self.buffers[name] = np.empty(shape, dtype)
        return buffer


def _buffer(workspace: Workspace | None, name: str, shape: tuple, dtype) -> np.ndarray:
    return workspace.get(name, shape, np.dtype(dtype)) if workspace is not None else np.empty(shape, dtype)


def resize_bilinear(image: np.ndarray, height: int, width: int, workspace: Workspace | None = None) -> np.ndarray:
    """HxWxC (any dtype) -> height x width x C float32, matching tf.image.resize's bilinear default.

    Only the 2x2 neighbourhoods are gathered (the needed rows, then the needed values of those rows, left
    and right neighbours into separate arrays so that every step below runs in place on contiguous
    memory); the lerps run along x, then along y, in float32, in TensorFlow's order:
    top + (bottom - top) * y_lerp, where top = left + (right - left) * x_lerp (likewise bottom)."""
    if image.ndim != 3:
        raise ValueError(f"expected an HxWxC image, got shape {image.shape}")
    return _resize(image, (0, image.shape[0], 0, image.shape[1]), height, width, workspace)


def resize_box(image: np.ndarray, box: tuple, height: int, width: int, workspace: Workspace | None = None) -> np.ndarray:
    """resize_bilinear(image[top:bottom, left:right]) for BOX = (top, bottom, left, right), value for value, without
    copying the box out of IMAGE (a region of a camera frame: device/regions/serve.py): the needed rows are gathered
    from the whole frame and the column offsets shifted by the box's left edge."""
    if image.ndim != 3:
        raise ValueError(f"expected an HxWxC image, got shape {image.shape}")
    return _resize(image, box, height, width, workspace)


def _resize(image: np.ndarray, box: tuple, height: int, width: int, workspace: Workspace | None) -> np.ndarray:
    top, bottom, first, last = box
    full_width, channels = image.shape[1], image.shape[2]
    table = resize_table(bottom - top, last - first, height, width, channels)
    rows = _buffer(workspace, "rows", (2 * height, full_width, channels), image.dtype)
    np.take(image, table.rows + top if top else table.rows, axis=0, out=rows, mode="clip")  # no hidden temporary
    rows = rows.reshape(2 * height, full_width * channels)
    shift = first * channels
    span = (2 * height, width * channels)
    left, across = _buffer(workspace, "left", span, np.float32), _buffer(workspace, "across", span, np.float32)
    gathered = _buffer(workspace, "gathered", span, image.dtype)
    np.copyto(left, np.take(rows, table.left + shift if shift else table.left, axis=1, out=gathered, mode="clip"))
    np.copyto(across, np.take(rows, table.right + shift if shift else table.right, axis=1, out=gathered,
                              mode="clip"))
    across -= left
    across *= table.x_weight
    across += left  # the x-interpolated rows: upper neighbours first, then lower
    upper, lower = across[:height], across[height:]
    lower -= upper
    lower *= table.y_weight
    lower += upper
    return lower.reshape(height, width, channels)


def swap_colour(image: np.ndarray) -> np.ndarray:
    """RGB <-> BGR (a view; no copy)."""
    return image[..., ::-1]


def quantize(values: np.ndarray, scale: float, zero_point: int, dtype,
             workspace: Workspace | None = None, pixel_range: bool = False) -> np.ndarray:
    """float (or uint8) -> int8/uint8 with the model's input scale and zero point, rounded (half to even)
    and clipped. ``pixel_range=True`` promises the values lie in 0..255 (a frame, or its bilinear resize)."""
    dtype = np.dtype(dtype)
    info = np.iinfo(dtype)
    out = _buffer(workspace, "quantized", values.shape, dtype)
    if scale == 1.0 and values.dtype == np.uint8 and dtype == np.int8 and zero_point == -128:
        np.bitwise_xor(values, np.uint8(0x80), out=out.view(np.uint8))  # the common case: x - 128, exact
        return out
    if scale <= 0:
        raise ValueError(f"the model's input is {dtype} but its quantization scale is {scale}")
    scaled = _buffer(workspace, "scaled", values.shape, np.float32)
    if scale == 1.0:
        np.copyto(scaled, values, casting="unsafe")
    else:
        np.multiply(values, np.float32(1.0 / scale), out=scaled, casting="unsafe")
    scaled += np.float32(zero_point)
    np.rint(scaled, out=scaled)
    pixels_fit = info.min <= zero_point and zero_point + 255.0 / scale <= info.max
    if not (pixel_range and pixels_fit):  # values known to be 0..255 that map inside the dtype need no clip
        np.clip(scaled, info.min, info.max, out=scaled)
    np.copyto(out, scaled, casting="unsafe")
    return out


@dataclass(frozen=True)
class InputPlan:
    """Everything preprocessing needs, read once from the manifest and the loaded model."""

    height: int
    width: int
    swap: bool  # the model wants BGR
    dtype: np.dtype
    scale: float = 0.0
    zero_point: int = 0

    @classmethod
    def for_model(cls, model, colour_order: str = "RGB") -> InputPlan:
        return cls(height=model.height, width=model.width, swap=colour_order == "BGR",
                   dtype=np.dtype(model.input_dtype), scale=model.input_scale, zero_point=model.input_zero_point)


def prepare(frame: np.ndarray, plan: InputPlan, workspace: Workspace | None = None, box: tuple | None = None
            ) -> np.ndarray:
    """RGB uint8 HxWx3 frame -> the model's input batch (1, h, w, 3) in its dtype. With a workspace, the
    batch is a view into it (valid until the next call with that workspace). BOX (top, bottom, left, right): that
    part of the frame, prepared exactly as the same pixels cut out would be (a region: device/regions/serve.py)."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB frame, got shape {frame.shape}")
    if box is not None:
        top, bottom, left, right = box
        if (bottom - top, right - left) == (plan.height, plan.width):
            frame = frame[top:bottom, left:right]
        else:
            frame = resize_box(frame, box, plan.height, plan.width, workspace)
    elif frame.shape[0] != plan.height or frame.shape[1] != plan.width:
        frame = resize_bilinear(frame, plan.height, plan.width, workspace)  # commutes with the swap below
    if plan.swap:
        frame = swap_colour(frame)
    if plan.dtype.kind in "iu":
        batch = quantize(frame, plan.scale, plan.zero_point, plan.dtype, workspace, pixel_range=True)
    else:
        batch = _buffer(workspace, "batch", frame.shape, plan.dtype)
        np.copyto(batch, frame, casting="unsafe")
    return batch[np.newaxis]
