"""A stand-in for ``picamera2.devices.IMX500``, the Raspberry Pi AI Camera (Sony IMX500), which a build machine
cannot have: the network runs on the sensor and its outputs arrive in each frame's metadata. Tests only.

What it does instead of the sensor: it serves a converted bundle's held-out images as the camera's frames and,
with each one, the outputs of MCT's fake-quantised model on that image (``imx500/fake_quant_outputs.npz``,
computed by convert --imx500 in Sony's toolchain venv), snapped to the sensor's 8-bit output grid (the scales in
the manifest's ``imx500`` section), as float tensors in the metadata - as the real firmware hands them over.
No bit-exact IMX500 emulator exists; this is the fake-quantised model's answer.

$EDGECAM_FAKE_IMX500_BUNDLE names the bundle. The interface is picamera2's: ``IMX500(network_file)`` (made before
``Picamera2()``), ``camera_num``, ``get_outputs(metadata, add_batch=False)``, ``get_input_size()``,
``network_intrinsics``; the camera's ``capture_request()`` gives a request with ``make_array``,
``get_metadata`` and ``release``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

LOADED: list = []  # the network on the (one) sensor, as the real IMX500 object configures the camera


def _grid(values, scale: float, signed: bool) -> np.ndarray:
    low, high = (-128, 127) if signed else (0, 255)
    return (np.clip(np.round(np.asarray(values, np.float64) / scale), low, high) * scale).astype(np.float32)


class NetworkIntrinsics:
    task = "classification"


class IMX500:
    def __init__(self, network_file: str, camera_id: str = ""):
        if not Path(network_file).is_file():
            raise FileNotFoundError(f"Firmware file {network_file} does not exist.")
        bundle = Path(os.environ["EDGECAM_FAKE_IMX500_BUNDLE"])
        manifest = json.loads((bundle / "manifest.json").read_text())
        info = manifest["imx500"]
        stored = np.load(bundle / info["outputs_file"])
        root = Path(manifest["dataset"]["root"])
        lines = (bundle / manifest["heldout_file"]).read_text().splitlines()
        self.images = [root / line.split("\t", 1)[1] for line in lines if "\t" in line]
        self.input_size = (manifest["input"]["width"], manifest["input"]["height"])
        outputs = {info["output_index"]: _grid(stored["probabilities"], info["output_scale"], info["output_signed"])}
        if info["embedding_index"] >= 0:
            outputs[info["embedding_index"]] = _grid(stored["embedding"], info["embedding_scale"],
                                                     info["embedding_signed"])
        self.outputs = [outputs[position] for position in sorted(outputs)]  # by the sensor's output ordinal
        self.camera_num = 0
        self.network_file = network_file
        self.network_intrinsics = NetworkIntrinsics()
        LOADED[:] = [self]

    def get_input_size(self) -> tuple:
        return self.input_size

    def frame(self, number: int) -> tuple:
        """Frame NUMBER: (BGR array of the held-out image, its metadata with the network's outputs)."""
        from PIL import Image

        index = number % len(self.images)
        with Image.open(self.images[index]) as image:
            rgb = np.asarray(image.convert("RGB"))
        tensors = [output[index] for output in self.outputs]
        metadata = {"CnnOutputTensor": np.concatenate(tensors).tolist(),
                    "CnnOutputTensorInfo": [len(tensor) for tensor in tensors], "SensorTimestamp": number}
        return np.ascontiguousarray(rgb[:, :, ::-1]), metadata

    def get_outputs(self, metadata: dict, add_batch: bool = False):
        flat = metadata.get("CnnOutputTensor")
        if flat is None:
            return None
        sizes = np.cumsum(metadata["CnnOutputTensorInfo"])[:-1]
        tensors = np.split(np.asarray(flat, np.float32), sizes)
        return [tensor[np.newaxis] for tensor in tensors] if add_batch else tensors
