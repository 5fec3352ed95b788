"""What a frame source is: the base class and its errors. Its own module so the backends that live in modules of
their own (device/imx500.py) and the registry (device/sources.py) both import it, and neither imports the other."""

from __future__ import annotations

import numpy as np


class SourceError(RuntimeError):
    """Reading a frame failed; the daemon retries with backoff."""


class EndOfStream(SourceError):
    """A finite source has no more frames."""


class SourceConfigError(ValueError):
    """The source cannot work as configured (unknown kind, missing library); retrying will not help."""


class Source:
    """Base class: ``open()`` then ``read()`` frames, ``close()`` when done (safe to call twice)."""

    live = True
    spec = ""
    has_full_stream = False  # read_full() gives more than read() (a second, larger stream)

    def open(self) -> None:
        pass

    def read(self) -> np.ndarray:
        raise NotImplementedError

    def read_full(self) -> np.ndarray:
        """A frame to record (capture): the whole camera frame where the source gives the model a smaller
        stream (the Pi camera's main stream beside its model-sized lores), else the same as read()."""
        return self.read()

    def close(self) -> None:
        pass


def close_camera(camera, spec: str, log) -> None:
    """Stop and close a picamera2 camera (the Pi camera's and the AI Camera's sources): each step tried, a failure
    logged at debug level, so closing a failed camera never hides the error that failed it."""
    for step in (camera.stop, camera.close):
        try:
            step()
        except Exception as error:  # noqa: BLE001 - closing a failed camera must not hide the first error
            log.debug("%s: %s", spec, error)
