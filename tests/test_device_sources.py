"""device/sources.py: every source returns RGB uint8 HxWx3.

Image folders and OpenCV video files are tested for real (the test writes a real MJPG .avi and reads it
back through OpenCV). The Pi camera cannot exist on a build machine: its backend is tested against a
stand-in class with picamera2's interface (create_preview_configuration, configure, start,
capture_array(name), stop, close) and its colour order ("RGB888" returns BGR bytes in memory)."""

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from device import sources
from device.sources import EndOfStream, SourceConfigError, SourceError, open_source

RED = (220, 20, 10)


def write_images(folder, count=3):
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.new("RGB", (20, 10), RED).save(folder / f"{index:02d}.png")
    return folder


def test_images_source_once_then_end(tmp_path):
    source = open_source(f"images:{write_images(tmp_path / 'imgs')}", loop=False)
    assert not source.live
    source.open()
    frames = [source.read() for _ in range(3)]
    assert all(f.shape == (10, 20, 3) and f.dtype == np.uint8 for f in frames)
    assert tuple(frames[0][0, 0]) == RED
    assert source.current.name == "02.png"
    with pytest.raises(EndOfStream):
        source.read()


def test_images_source_loops(tmp_path):
    source = open_source(f"images:{write_images(tmp_path / 'imgs', 2)}", loop=True)
    source.open()
    names = []
    for _ in range(5):
        source.read()
        names.append(source.current.name)
    assert names == ["00.png", "01.png", "00.png", "01.png", "00.png"]


def test_images_source_converts_rgba_grey_and_palette(tmp_path):
    folder = tmp_path / "modes"
    folder.mkdir()
    Image.new("RGBA", (4, 4), RED + (128,)).save(folder / "a.png")
    Image.new("L", (4, 4), 77).save(folder / "b.png")
    Image.new("RGB", (4, 4), RED).convert("P").save(folder / "c.gif")
    source = open_source(f"images:{folder}", loop=False)
    source.open()
    a, b, c = (source.read() for _ in range(3))
    assert a.shape == b.shape == c.shape == (4, 4, 3)
    assert tuple(a[0, 0]) == RED and tuple(b[0, 0]) == (77, 77, 77)


def test_images_source_skips_corrupt_files_with_one_warning(tmp_path, caplog):
    folder = write_images(tmp_path / "imgs", 2)
    (folder / "01.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    source = open_source(f"images:{folder}", loop=True)
    source.open()
    with caplog.at_level(logging.WARNING, logger="edgecam.sources"):
        names = []
        for _ in range(4):
            source.read()
            names.append(source.current.name)
    assert names == ["00.png"] * 4
    warnings = [r for r in caplog.records if "01.png" in r.getMessage()]
    assert len(warnings) == 1 and "not a readable image" in warnings[0].getMessage()


def test_images_source_errors(tmp_path):
    with pytest.raises(SourceError, match="no such folder"):
        open_source(f"images:{tmp_path / 'missing'}").open()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        open_source(f"images:{tmp_path / 'empty'}").open()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"junk")
    bad = open_source(f"images:{tmp_path / 'bad'}")
    bad.open()
    with pytest.raises(SourceError, match="none of the 1 files could be decoded"):
        bad.read()


def test_registry_errors():
    with pytest.raises(SourceConfigError, match="unknown kind 'webcam'"):
        open_source("webcam:0")
    with pytest.raises(SourceConfigError, match="images: needs a folder"):
        open_source("images")
    assert set(sources.SOURCES) == {"images", "opencv", "picamera2", "imx500"}


# ---- OpenCV: a real video file -----------------------------------------------------------
def write_video(path, frames=5, size=(64, 48)):
    cv2 = pytest.importorskip("cv2")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    assert writer.isOpened()
    for _ in range(frames):
        bgr = np.zeros((size[1], size[0], 3), np.uint8)
        bgr[:] = RED[::-1]  # OpenCV writes BGR: this is a red frame
        writer.write(bgr)
    writer.release()
    return path


def test_opencv_reads_a_real_video_file_as_rgb(tmp_path):
    video = write_video(tmp_path / "clip.avi")
    source = open_source(f"opencv:{video}", loop=False)
    assert not source.live
    source.open()
    frames = []
    with pytest.raises(EndOfStream):
        while True:
            frames.append(source.read())
    source.close()
    assert len(frames) == 5
    frame = frames[0]
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    red, green, blue = frame[24, 32].astype(int)
    assert red > 180 and green < 60 and blue < 60  # RGB order, within JPEG error


def test_opencv_video_file_loops(tmp_path):
    source = open_source(f"opencv:{write_video(tmp_path / 'clip.avi', frames=3)}", loop=True)
    source.open()
    assert len([source.read() for _ in range(7)]) == 7
    source.close()
    source.close()  # twice is fine


def test_opencv_missing_file_and_unopenable_target(tmp_path):
    with pytest.raises(SourceError, match="no such video file"):
        open_source(f"opencv:{tmp_path / 'none.avi'}").open()
    (tmp_path / "fake.avi").write_bytes(b"not a video")
    with pytest.raises(SourceError, match="cannot open"):
        open_source(f"opencv:{tmp_path / 'fake.avi'}").open()
    camera = open_source("opencv:7")  # no /dev/video7 on a build machine
    assert camera.live
    with pytest.raises(SourceError):
        camera.open()
        camera.read()


# ---- picamera2: a stand-in package (no Pi camera on a build machine) -----------------------------
FAKE_PICAMERA2 = Path(__file__).resolve().parent / "fake_picamera2"


@pytest.fixture()
def picamera2(monkeypatch):
    """tests/fake_picamera2 imported as ``picamera2``, as device/sources.py imports the real one on a Pi."""
    monkeypatch.syspath_prepend(str(FAKE_PICAMERA2))
    sys.modules.pop("picamera2", None)
    import picamera2

    picamera2.Picamera2.instances.clear()
    yield picamera2
    sys.modules.pop("picamera2", None)  # the next test imports what is really installed (nothing, here)


def test_picamera2_gives_the_model_its_lores_stream_and_records_the_main_stream(picamera2):
    source = open_source("picamera2", size=(32, 24))
    source.open()
    camera = picamera2.Picamera2.instances[-1]
    assert camera.config["lores"] == {"size": (32, 24), "format": "RGB888"}
    assert camera.config["main"] == {"size": sources.CAPTURE_SIZE, "format": "RGB888"}
    frame = source.read()  # the model's frame: the lores stream, resized by the ISP
    assert frame.shape == (24, 32, 3) and frame.flags["C_CONTIGUOUS"]
    assert tuple(frame[0, 0]) == (10, 20, 200)  # R, G, B of the blue lores stream (BGR in memory)
    full = source.read_full()  # what capture records: the main stream, not the model-sized one
    width, height = sources.CAPTURE_SIZE
    assert full.shape == (height, width, 3) and tuple(full[0, 0]) == (200, 20, 10)  # red main stream, as RGB
    source.close()
    assert camera.calls == ["configure", "start", "stop", "close"]


def test_picamera2_without_rgb_lores_sizes_the_main_stream_and_records_that(picamera2, monkeypatch):
    monkeypatch.setenv("EDGECAM_FAKE_PICAMERA2", "pi4")  # a Pi 4 camera: no RGB lores stream
    source = open_source("picamera2", size=(32, 24))
    source.open()
    camera = picamera2.Picamera2.instances[-1]
    assert source.stream == "main" and camera.config["main"]["size"] == (32, 24)
    assert source.read().shape == (24, 32, 3) and source.read_full().shape == (24, 32, 3)


def test_picamera2_capture_failure_is_a_source_error(picamera2, monkeypatch):
    monkeypatch.setenv("EDGECAM_FAKE_PICAMERA2", "fail-after:1")
    source = open_source("picamera2", size=(8, 8))
    source.open()
    source.read()
    with pytest.raises(SourceError, match="capture failed"):
        source.read_full()


def test_picamera2_held_by_another_process_is_a_source_error(picamera2, monkeypatch):
    monkeypatch.setenv("EDGECAM_FAKE_PICAMERA2", "busy")
    with pytest.raises(SourceError, match="Device or resource busy"):
        open_source("picamera2", size=(8, 8)).open()


def test_picamera2_missing_library_says_how_to_install():
    try:
        import picamera2  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("picamera2 is installed here (a Pi): the missing-library message cannot be checked")
    with pytest.raises(SourceConfigError, match="sudo apt install python3-picamera2"):
        open_source("picamera2").open()
