"""Frame sources: small backends in a registry, each importing its library lazily, inside itself.

``open_source("images:DIR", size=(w, h), loop=True)`` builds one. Every source's ``read()`` returns an
RGB uint8 HxWx3 array, or raises :class:`SourceError` (a failure worth retrying: unplugged camera, read
error) or :class:`EndOfStream` (a finite source has no more frames). A missing library or a malformed
spec raises :class:`SourceConfigError`, which no retry can fix.

- ``images:DIR``: replays an image folder (recursively, sorted), looping or once; Pillow decodes. An image
  larger than ``max_pixels`` (read from its header, before anything is decoded), a decompression bomb or
  any file that fails is skipped and counted by reason (``skipped``); a reopen resumes after the last file.
- ``opencv:INDEX|PATH|URL``: USB webcams (V4L2), video files, RTSP/HTTP streams (opencv optional).
- ``picamera2[:N]``: the Raspberry Pi camera; a low-resolution stream sized to the model input, so the
  camera's ISP resizes for free, beside a main stream of CAPTURE_SIZE that ``read_full()`` gives to capture.
  picamera2's "RGB888" is BGR in memory: the frames are swapped to RGB.

``read()`` is the frame the model sees; ``read_full()`` is the frame a capture records: the same frame for
every source but the Pi camera, where it is the main stream (the data set keeps more than the model needs,
so a host retrain can use a larger input).

``live`` sources (cameras, streams) never wait for the model: the pipeline keeps the newest frame and
drops the rest. Replays (folders, video files) are not live: the pipeline takes every frame in order.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np

from device.layout import IMAGE_SUFFIXES
from device.source import EndOfStream, Source, SourceConfigError, SourceError, close_camera  # noqa: F401 (the registry's names)

log = logging.getLogger("edgecam.sources")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mjpg", ".mjpeg", ".h264", ".m4v")
# 16 MP: a Pi camera's full frame (12 MP) fits, and the worst decode (an RGBA/palette original plus its RGB
# copy, 7 bytes a pixel: 112 MB) still fits beside the daemon's ~80 MB in the unit's MemoryMax=256M.
MAX_IMAGE_PIXELS = 16_000_000
SKIP_REASONS = ("too_large", "decompression_bomb", "unreadable", "vanished", "error")
# The Pi camera's main stream, which capture records: 4:3 like the v2 and HQ sensors (the ISP scales the whole
# field of view), 3.7 MB a buffer in RGB888 (two buffers), 4 times the side of a 320-pixel model input.
CAPTURE_SIZE = (1280, 960)


def ensure_rgb(image: np.ndarray) -> np.ndarray:
    """Grey (HxW or HxWx1) or RGBA -> RGB uint8 HxWx3."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image, dtype=np.uint8)


# ---- images:DIR ---------------------------------------------------------------------------
class ImagesSource(Source):
    """Replays image files in sorted order. A file that cannot be used is skipped (one warning per file) and
    counted in ``skipped`` by reason; the position survives close()/open(), so a retry resumes the replay."""

    live = False

    def __init__(self, folder: str = "", loop: bool = True, paths: list | None = None,
                 max_pixels: int = MAX_IMAGE_PIXELS):
        self.folder = folder
        self.loop = loop
        self.paths = list(paths) if paths is not None else None
        self.spec = f"images:{folder}"
        self.position = 0
        self.max_pixels = int(max_pixels)
        self.skipped: Counter = Counter()  # reason -> files skipped (each time one is met)
        self.bad: set = set()
        self.current: Path | None = None  # the file the last frame came from

    def open(self) -> None:
        if self.paths is None or self.folder:
            root = Path(self.folder)
            if not root.is_dir():
                self.missing(f"images:{self.folder}: no such folder")
            self.paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if self.current is not None:  # resume after the last file replayed, even if the folder changed
                self.position = bisect.bisect_right(self.paths, self.current)
        if not self.paths:
            self.missing(f"images:{self.folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
        from PIL import Image  # lazy: only this source needs Pillow

        self.image_module = Image

    def missing(self, message: str) -> None:
        """A looping daemon waits for the folder (it may be mounted later); a --once replay cannot."""
        if self.loop:
            raise SourceError(message)
        raise SourceConfigError(f"{message}: check the path given to --source images:DIR")

    def read(self) -> np.ndarray:
        for _ in range(len(self.paths) + 1):
            if self.position >= len(self.paths):
                if not self.loop:
                    raise EndOfStream(f"{self.spec}: all {len(self.paths)} images replayed")
                self.position = 0
            path = Path(self.paths[self.position])
            self.position += 1
            frame = self.decode(path)
            if frame is not None:
                self.current = path
                return frame
        raise SourceError(f"{self.spec}: none of the {len(self.paths)} files could be decoded "
                          f"(skipped: {dict(self.skipped)})")

    def decode(self, path: Path) -> np.ndarray | None:
        """The RGB pixels of ``path``, or None (counted in ``skipped``) when it cannot or must not be decoded."""
        Image = self.image_module
        try:
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
                if width * height > self.max_pixels:
                    return self.skip(path, "too_large", f"{width}x{height} is over --max-image-pixels "
                                                        f"{self.max_pixels}; resize it or raise the limit")
                return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
        except Image.DecompressionBombError as error:
            return self.skip(path, "decompression_bomb", str(error))
        except FileNotFoundError:
            return self.skip(path, "vanished", "deleted since the folder was listed")
        except (OSError, ValueError, SyntaxError) as error:  # Pillow's errors for truncated/corrupt files
            return self.skip(path, "unreadable", f"not a readable image ({error})")
        except Exception as error:  # noqa: BLE001 - no file in a folder may stop the replay
            return self.skip(path, "error", f"{type(error).__name__}: {error}")

    def skip(self, path: Path, reason: str, why: str) -> None:
        self.skipped[reason] += 1
        if path not in self.bad:
            self.bad.add(path)
            log.warning("skipping %s: %s", path, why)
        return None


# ---- opencv:INDEX|PATH|URL ----------------------------------------------------------------
class OpenCVSource(Source):
    """A V4L2 webcam (``opencv:0``), a video file or an RTSP/HTTP URL, through OpenCV (BGR -> RGB)."""

    def __init__(self, target: str, loop: bool = True):
        if not target:
            raise SourceConfigError("opencv: needs a camera index, a video file or a URL, e.g. opencv:0")
        self.target = target
        self.loop = loop
        self.spec = f"opencv:{target}"
        self.is_url = "://" in target
        self.is_file = not self.is_url and not target.isdigit()
        self.live = not self.is_file
        self.capture = None

    def open(self) -> None:
        try:
            import cv2  # lazy: opencv is optional
        except ImportError:
            raise SourceConfigError(
                f"{self.spec} needs OpenCV: pip install opencv-python-headless (or apt install python3-opencv)"
            ) from None
        self.cv2 = cv2
        if self.is_file and not Path(self.target).is_file():
            raise SourceError(f"{self.spec}: no such video file")
        if self.target.isdigit():
            capture = cv2.VideoCapture(int(self.target), cv2.CAP_V4L2 if os.name == "posix" else cv2.CAP_ANY)
        else:
            capture = cv2.VideoCapture(self.target)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"{self.spec}: cannot open (unplugged, busy, or not a video)")
        if self.live:
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # no stale frames queued in the driver
        self.capture = capture

    def read(self) -> np.ndarray:
        if self.capture is None:
            raise SourceError(f"{self.spec}: not open")
        ok, frame = self.capture.read()
        if not ok and self.is_file:
            if not self.loop:
                raise EndOfStream(f"{self.spec}: end of the video")
            self.capture.set(self.cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.capture.read()
        if not ok or frame is None:
            raise SourceError(f"{self.spec}: read failed (camera unplugged or stream ended)")
        if frame.ndim == 3 and frame.shape[2] == 3:
            return self.cv2.cvtColor(frame, self.cv2.COLOR_BGR2RGB)
        return ensure_rgb(frame)

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()
            self.capture = None


# ---- picamera2[:N] ------------------------------------------------------------------------
class Picamera2Source(Source):
    """The Pi camera. The "lores" stream is sized to the model input so the ISP does the resizing, and
    ``read()`` gives it to the model; the main stream (CAPTURE_SIZE) is what ``read_full()`` records. Where
    the camera cannot give an RGB lores stream (Pi 4 and older give YUV420 only there), the main stream is
    sized to the model input instead and is all there is: captures are model-sized then. "RGB888" is BGR in
    memory (picamera2's own PIL mode for it is "BGR"), so frames are swapped to RGB here."""

    def __init__(self, camera: str = "", size: tuple = (224, 224), main_size: tuple = CAPTURE_SIZE):
        self.camera_number = int(camera) if camera else 0
        self.size = (int(size[0]), int(size[1]))  # (width, height)
        self.main_size = main_size
        self.spec = f"picamera2:{self.camera_number}"
        self.camera = None
        self.stream = "lores"

    def open(self) -> None:
        try:
            from picamera2 import Picamera2  # lazy: exists only on a Raspberry Pi
        except ImportError:
            raise SourceConfigError(
                "picamera2 is not installed: on Raspberry Pi OS run 'sudo apt install python3-picamera2' "
                "(and create the venv with --system-site-packages), or use --source opencv:0 or images:DIR"
            ) from None
        try:
            camera = Picamera2(self.camera_number)
        except (RuntimeError, IndexError, OSError) as error:
            raise SourceError(f"{self.spec}: no camera ({error}); check the ribbon cable") from None
        try:
            config = camera.create_preview_configuration(
                main={"size": self.main_size, "format": "RGB888"},
                lores={"size": self.size, "format": "RGB888"}, buffer_count=2)
            camera.configure(config)
            self.stream = "lores"
        except (RuntimeError, ValueError) as error:
            log.info("%s: no RGB lores stream (%s); sizing the main stream to the model", self.spec, error)
            camera.configure(camera.create_preview_configuration(
                main={"size": self.size, "format": "RGB888"}, buffer_count=2))
            self.stream = "main"
        try:
            camera.start()
        except RuntimeError as error:
            camera.close()
            raise SourceError(f"{self.spec}: cannot start ({error})") from None
        self.camera = camera

    @property
    def has_full_stream(self) -> bool:
        return self.stream == "lores"

    def read(self) -> np.ndarray:
        return self._capture(self.stream)

    def read_full(self) -> np.ndarray:
        return self._capture("main")

    def _capture(self, stream: str) -> np.ndarray:
        if self.camera is None:
            raise SourceError(f"{self.spec}: not open")
        try:
            bgr = self.camera.capture_array(stream)
        except (RuntimeError, OSError) as error:
            raise SourceError(f"{self.spec}: capture failed ({error})") from None
        return np.ascontiguousarray(bgr[:, :, 2::-1])  # BGR(X) in memory -> RGB

    def close(self) -> None:
        if self.camera is not None:
            camera, self.camera = self.camera, None
            close_camera(camera, self.spec, log)


# ---- registry -----------------------------------------------------------------------------
def _images(argument: str, size: tuple, loop: bool) -> Source:
    if not argument:
        raise SourceConfigError("images: needs a folder, e.g. images:data/rps/test")
    return ImagesSource(argument, loop=loop)


def _imx500(argument: str, size: tuple, loop: bool) -> Source:
    from device.imx500 import Imx500Source  # the AI Camera: its own module, picamera2 imported lazily there

    return Imx500Source(argument, size=size)


SOURCES = {
    "images": _images,
    "opencv": lambda argument, size, loop: OpenCVSource(argument, loop=loop),
    "picamera2": lambda argument, size, loop: Picamera2Source(argument, size=size),
    "imx500": _imx500,
}


def open_source(spec: str, size: tuple = (224, 224), loop: bool = True, max_pixels: int | None = None) -> Source:
    """Build (not yet open) the source named by ``KIND[:ARGUMENT]``; ``size`` is the model's (width, height);
    ``max_pixels`` caps decoded files for the sources that decode files (``images:``)."""
    kind, _, argument = str(spec).partition(":")
    factory = SOURCES.get(kind)
    if factory is None:
        raise SourceConfigError(
            f"--source {spec}: unknown kind {kind!r}; use one of: images:DIR, opencv:INDEX|PATH|URL, picamera2, "
            "imx500:BUNDLE/imx500/network.rpk"
        )
    source = factory(argument, size, loop)
    if max_pixels is not None and hasattr(source, "max_pixels"):
        source.max_pixels = int(max_pixels)
    return source
