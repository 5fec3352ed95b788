"""The Raspberry Pi AI Camera (Sony IMX500): the network runs on the sensor, its outputs come with each frame.

The only module in device/ that touches picamera2's ``IMX500`` (imported lazily: picamera2 exists only on
Raspberry Pi OS). Two halves, used together by the daemon:

- :class:`Imx500Source` (``--source imx500:BUNDLE/imx500/network.rpk``): loads the network onto the sensor
  (``IMX500(rpk)``, before ``Picamera2()``, as picamera2 requires), captures requests and hands the daemon a
  :class:`SensorFrame`: the RGB frame with the network's output tensors of that very frame
  (``imx500.get_outputs(request.get_metadata())``).
- :class:`SensorModel` (``--model imx500``): what the Classifier serves instead of an interpreter. It reads the
  tensors of each frame, puts them on the 8-bit grid the manifest records (manifest.imx500: scales), and gives
  the probabilities and the embedding; a taught head runs on that embedding on the Pi's CPU (device/teach/),
  the network on the sensor stays as converted.

Pure numpy otherwise: :func:`dequantize` takes arrays, not cameras, so it is tested without hardware.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.layout import IMX500_FORMAT, IMX500_PACKER, IMX500_RPK
from device.source import Source, SourceConfigError, SourceError, close_camera

log = logging.getLogger(__name__)
FORMAT = IMX500_FORMAT
FIRST_OUTPUT_FRAMES = 60  # frames to wait, after start, for the network's first outputs (it loads ~1-2 s)


def dequantize(tensor, scale: float, signed: bool) -> np.ndarray:
    """One output tensor -> float32 values on the sensor's 8-bit grid (integer * scale). Integer tensors are
    scaled; float tensors (picamera2 gives floats already scaled by the firmware) are snapped to the grid, so a
    value off the grid cannot pass for a measured one."""
    values = np.asarray(tensor).reshape(-1)
    if not scale:
        return values.astype(np.float32)
    low, high = (-128, 127) if signed else (0, 255)
    steps = values if values.dtype.kind in "iu" else np.round(values.astype(np.float64) / scale)
    return (np.clip(steps, low, high) * scale).astype(np.float32)


class SensorFrame(np.ndarray):
    """An RGB frame (a numpy array) carrying the network outputs that came with it (``tensors``)."""

    tensors: list | None = None


def sensor_frame(rgb: np.ndarray, tensors) -> SensorFrame:
    frame = np.ascontiguousarray(rgb).view(SensorFrame)
    frame.tensors = [np.asarray(tensor) for tensor in tensors]
    return frame


@dataclass
class SensorModel:
    """The AI Camera's network as the Classifier sees it: no interpreter, outputs read from each frame."""

    format: str
    path: Path  # packerOut.zip (its sha256 is the model's identity: heads are keyed by it)
    sha256: str
    input_shape: tuple
    output_index: int
    output_scale: float
    output_signed: bool
    embedding_index: int | None
    embedding_scale: float
    embedding_signed: bool
    runtime: str = "imx500 (on the sensor)"
    threads: int | None = None
    verified: bool = True
    input_dtype: object = np.float32
    output_dtype: object = np.float32
    input_scale: float = 0.0
    input_zero_point: int = 0
    output_zero_point: int = 0
    embedding_zero_point: int = 0
    on_sensor: bool = True

    @property
    def height(self) -> int:
        return int(self.input_shape[1])

    @property
    def width(self) -> int:
        return int(self.input_shape[2])

    def read(self, frame) -> tuple:
        """A SensorFrame -> (probabilities, embedding or None), float32 on the recorded grid."""
        tensors = getattr(frame, "tensors", None)
        if not tensors:
            raise ValueError("the imx500 model serves frames from --source imx500:PATH/network.rpk only (this frame "
                             "came without the sensor's outputs); saved frames (teach, evaluate) need a CPU model: "
                             "--model int8")
        probabilities = dequantize(tensors[self.output_index], self.output_scale, self.output_signed)
        embedding = None if self.embedding_index is None else dequantize(
            tensors[self.embedding_index], self.embedding_scale, self.embedding_signed)
        return probabilities, embedding

    def run(self, batch):
        raise ValueError("the imx500 model runs on the AI Camera's sensor, not on the CPU: serve it with "
                         "--source imx500:PATH/network.rpk, or pick a TFLite --model (int8) for this task")

    run_both = run

    def describe(self) -> dict:
        return {"format": self.format, "file": str(self.path), "sha256": self.sha256, "runtime": self.runtime,
                "threads": self.threads, "verified": self.verified}


def not_tuned(manifest) -> str:
    """What device tune says of the AI Camera's model: it is not a CPU format, so nothing is measured or chosen."""
    info = manifest.imx500
    return (f"imx500 is not tuned: its network runs on the AI Camera's sensor, at the camera's frame rate, whatever "
            f"the CPU does (memory {info.memory_usage_bytes / 1024:.0f} KiB of {info.memory_available_bytes / 1024:.0f} "
            "KiB on the chip); the CPU only applies the head. Serve it with --model imx500 --source "
            f"imx500:BUNDLE/{IMX500_RPK}; the table below is for the TFLite formats")


def load_sensor_model(bundle, manifest) -> SensorModel:
    """manifest.imx500 -> a SensorModel; ValueError naming the fix when the bundle was not converted for it or
    its packerOut.zip does not match the manifest."""
    info = manifest.imx500
    if info is None:
        raise ValueError(f"{bundle} has no AI Camera model: convert it with python -m convert {bundle} --imx500 "
                         "(make convert IMX500=1) on the build machine.")
    path = Path(bundle) / info.file
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise ValueError(f"{path} cannot be read ({error.strerror}): copy the bundle again.") from None
    if digest != info.sha256:
        raise ValueError(f"{path} does not match its sha256 in the manifest: the copy is corrupt or stale. Copy the "
                         "bundle again or re-run python -m convert --imx500 on it.")
    spec = manifest.input
    return SensorModel(format=FORMAT, path=path, sha256=digest, input_shape=(1, spec.height, spec.width, 3),
                       output_index=info.output_index, output_scale=info.output_scale,
                       output_signed=info.output_signed,
                       embedding_index=None if info.embedding_index < 0 else info.embedding_index,
                       embedding_scale=info.embedding_scale, embedding_signed=info.embedding_signed)


class Imx500Source(Source):
    """The AI Camera: the network file goes onto the sensor, each frame comes with the network's outputs."""

    live = True

    def __init__(self, rpk: str = "", size: tuple = (224, 224)):
        if not rpk:
            raise SourceConfigError(f"--source imx500 needs the network file: --source imx500:BUNDLE/{IMX500_RPK} "
                                    f"(install.sh makes it from {IMX500_PACKER} with imx500-package)")
        self.rpk = Path(rpk)
        self.size = (int(size[0]), int(size[1]))  # (width, height): the model's input, as the sensor's output
        self.spec = f"imx500:{rpk}"
        self.camera = None
        self.imx500 = None

    def open(self) -> None:
        if not self.rpk.is_file():
            raise SourceConfigError(f"{self.spec}: {self.rpk} does not exist; package the model on the Pi: "
                                    f"imx500-package -i BUNDLE/{IMX500_PACKER} -o {self.rpk.parent} (install.sh does "
                                    "it when imx500-tools is installed)")
        try:
            from picamera2 import Picamera2  # lazy: exists only on Raspberry Pi OS
            from picamera2.devices import IMX500
        except ImportError:
            raise SourceConfigError("picamera2 with IMX500 support is not installed: on Raspberry Pi OS run "
                                    "'sudo apt install python3-picamera2 imx500-all'") from None
        try:
            self.imx500 = IMX500(str(self.rpk))  # before Picamera2(): it loads the network onto the sensor
            camera = Picamera2(self.imx500.camera_num)
        except (RuntimeError, IndexError, OSError, FileNotFoundError) as error:
            raise SourceError(f"{self.spec}: no AI Camera ({error}); check the ribbon cable and the firmware "
                              "(python -m device doctor)") from None
        try:
            camera.configure(camera.create_preview_configuration(
                main={"size": self.size, "format": "RGB888"}, buffer_count=4))
            camera.start()
        except (RuntimeError, ValueError) as error:
            camera.close()
            raise SourceError(f"{self.spec}: cannot start ({error})") from None
        self.camera = camera

    def read(self) -> np.ndarray:
        """The next frame whose metadata holds the network's outputs (the first frames after start may not)."""
        if self.camera is None:
            raise SourceError(f"{self.spec}: not open")
        for _ in range(FIRST_OUTPUT_FRAMES):
            try:
                request = self.camera.capture_request()
                try:
                    bgr = request.make_array("main")
                    metadata = request.get_metadata()
                finally:
                    request.release()
            except (RuntimeError, OSError) as error:
                raise SourceError(f"{self.spec}: capture failed ({error})") from None
            tensors = self.imx500.get_outputs(metadata, add_batch=False)
            if tensors is not None:
                return sensor_frame(bgr[:, :, 2::-1], tensors)  # "RGB888" is BGR in memory
        raise SourceError(f"{self.spec}: {FIRST_OUTPUT_FRAMES} frames came without the network's outputs; is "
                          f"{self.rpk} the network for this bundle? (python -m device doctor)")

    def close(self) -> None:
        if self.camera is not None:
            camera, self.camera = self.camera, None
            close_camera(camera, self.spec, log)
