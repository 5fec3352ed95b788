"""A stand-in for the ``picamera2`` package, which exists only on a Raspberry Pi with its camera: a build
machine cannot have one. Tests put this folder first on the import path (also for subprocesses, through
PYTHONPATH), so device/sources.py imports it exactly as it imports the real one: ``from picamera2 import
Picamera2``. Only the interface edgecam uses is here, with the real one's behaviour where it matters:

- ``Picamera2(camera_num)``; ``sensor_resolution``; ``create_preview_configuration(main=, lores=,
  buffer_count=)``; ``configure``; ``start``; ``capture_array(name)``; ``stop``; ``close``.
- "RGB888" arrays are BGR in memory (picamera2 maps the format to PIL's "BGR"); each stream's array has the
  size configured for it.
- A Pi 4 and older cannot give an RGB lores stream: ``configure`` raises RuntimeError, as the real one does.

With an AI Camera network loaded (``picamera2.devices.IMX500``, made first, as on a Pi), ``capture_request()``
gives that stand-in's frames and metadata (the held-out images and the fake-quantised model's outputs).

The camera's behaviour is picked with $EDGECAM_FAKE_PICAMERA2 (read when a camera is made): ``pi5`` (the
default: RGB lores allowed), ``pi4`` (lores must be YUV420), ``busy`` (another process holds the camera),
``fail-after:N`` (capture_array fails after N frames). The main stream is red, the lores stream blue, so a
test can tell which stream a frame came from.
"""

from __future__ import annotations

import os

import numpy as np

SENSOR = (3280, 2464)  # a Camera Module v2's sensor
BGR = {"main": (10, 20, 200), "lores": (200, 20, 10)}  # red main, blue lores (B, G, R bytes in memory)


class Picamera2:
    instances: list = []

    def __init__(self, camera_num: int = 0):
        mode = os.environ.get("EDGECAM_FAKE_PICAMERA2", "pi5")
        if mode == "busy":
            raise RuntimeError("Failed to acquire camera: Device or resource busy")
        self.camera_num = camera_num
        self.lores_rgb = mode != "pi4"
        self.fail_after = int(mode.split(":")[1]) if mode.startswith("fail-after:") else None
        self.sensor_resolution = SENSOR
        self.config: dict | None = None
        self.calls: list = []
        self.captures = 0
        Picamera2.instances.append(self)

    def create_preview_configuration(self, main=None, lores=None, buffer_count=4, **kwargs):
        return {"main": dict(main or {"size": (640, 480), "format": "XBGR8888"}), "lores": lores,
                "buffer_count": buffer_count}

    def configure(self, config):
        lores = config.get("lores")
        if lores and lores.get("format") != "YUV420" and not self.lores_rgb:
            raise RuntimeError("lores stream must be YUV420 on this platform")
        self.config = config
        self.calls.append("configure")

    def start(self):
        self.calls.append("start")

    def capture_array(self, name: str = "main"):
        self.captures += 1
        if self.fail_after is not None and self.captures > self.fail_after:
            raise RuntimeError("Camera frontend has timed out!")
        stream = (self.config or {}).get(name)
        if not stream:
            raise RuntimeError(f"Stream {name!r} is not configured")
        width, height = stream["size"]
        return np.broadcast_to(np.array(BGR[name], np.uint8), (height, width, 3)).copy()

    def capture_request(self):
        """With an AI Camera network loaded (picamera2.devices.IMX500): its next frame and metadata."""
        from picamera2.devices import LOADED

        self.captures += 1
        if not LOADED:
            raise RuntimeError("no AI Camera network loaded: the stand-in serves requests for the IMX500 only")
        frame, metadata = LOADED[0].frame(self.captures - 1)
        return CompletedRequest(frame, metadata)

    def stop(self):
        self.calls.append("stop")

    def close(self):
        self.calls.append("close")


class CompletedRequest:
    """One captured request: its arrays and metadata stay until release(), as picamera2's."""

    def __init__(self, array, metadata: dict):
        self.array, self.metadata, self.released = array, metadata, False

    def make_array(self, name: str = "main"):
        return self.array

    def get_metadata(self) -> dict:
        return dict(self.metadata)

    def release(self):
        self.released = True

