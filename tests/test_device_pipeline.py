"""device/pipeline.py: the one-slot holder, the capture thread's retries, stats and the classifier."""

import threading
import time

import device_bundle
import numpy as np
import pytest

from device import pipeline
from device.manifest import load_manifest
from device.runtime import load_model
from device.sources import EndOfStream, Source, SourceError


def test_slot_keeps_only_the_newest_frame_and_counts_drops():
    slot = pipeline.FrameSlot()
    for value in range(5):
        slot.put(value)
    assert slot.get(0.01) == 4 and slot.dropped == 4
    assert slot.get(0.01) is None


def test_slot_waits_for_a_replay_instead_of_dropping():
    slot = pipeline.FrameSlot()
    slot.put("a", wait=True)
    writer = threading.Thread(target=slot.put, args=("b",), kwargs={"wait": True})
    writer.start()
    time.sleep(0.05)
    assert writer.is_alive()  # blocked: the slot is full
    assert slot.get(0.1) == "a"
    writer.join(1)
    assert slot.get(0.1) == "b" and slot.dropped == 0


def test_closed_slot_returns_at_once():
    slot = pipeline.FrameSlot()
    slot.close()
    start = time.monotonic()
    assert slot.get(5.0) is None and time.monotonic() - start < 0.5


class FlakySource(Source):
    """Fails to open twice, then delivers frames; counts how often it was opened."""

    live = True
    opens = 0

    def open(self):
        FlakySource.opens += 1
        if FlakySource.opens <= 2:
            raise SourceError("camera unplugged")

    def read(self):
        time.sleep(0.001)
        return np.zeros((2, 2, 3), np.uint8)


def test_capture_retries_a_failing_source_with_backoff_then_recovers():
    FlakySource.opens = 0
    states = []
    slot = pipeline.FrameSlot()
    capture = pipeline.Capture(FlakySource, slot)
    capture.on_change = lambda: states.append(capture.state)
    capture.start()
    deadline = time.monotonic() + 3
    while capture.state != "ok" and time.monotonic() < deadline:
        time.sleep(0.01)
    capture.stop()
    capture.join(2)
    assert not capture.is_alive()
    assert capture.retries == 2 and FlakySource.opens == 3
    assert states[:2] == ["degraded", "ok"]
    assert slot.dropped > 0 or capture.frames >= 1


class EndingSource(Source):
    live = False

    def __init__(self):
        self.left = 3

    def read(self):
        if not self.left:
            raise EndOfStream("done")
        self.left -= 1
        return np.zeros((2, 2, 3), np.uint8)


def test_capture_once_ends_and_closes_the_slot_after_every_frame():
    slot = pipeline.FrameSlot()
    capture = pipeline.Capture(EndingSource, slot, once=True)
    capture.start()
    got = []
    while True:
        frame = slot.get(1.0)
        if frame is None and slot.closed:
            break
        if frame is not None:
            got.append(frame)
    capture.join(1)
    assert len(got) == 3 and capture.state == "ended" and slot.dropped == 0


def test_stats_percentiles_and_fps():
    stats = pipeline.Stats(window=100)
    assert stats.percentiles() == {"p50": None, "p90": None, "p99": None}
    now = time.monotonic()
    for index in range(250):  # more than the window: bounded
        stats.record(float(index % 100), now - 1.0 + index / 250)
    percentiles = stats.percentiles()
    assert 45 <= percentiles["p50"] <= 55 and percentiles["p99"] >= 95
    assert 200 <= stats.fps(now) <= 260


@pytest.mark.parametrize("fmt", ["int8", "float32"])
def test_classifier_process_gives_a_full_result(bundle, fmt):
    manifest = load_manifest(bundle)
    classifier = pipeline.Classifier(load_model(fmt, bundle, manifest=manifest), manifest, smoothing=3,
                                     threshold=0.5, k=2)
    label, path = device_bundle.heldout(bundle)[0]
    from PIL import Image

    frame = np.asarray(Image.open(path).convert("RGB"))
    result = classifier.process(frame)
    assert result["raw_label"] == label == result["label"]
    assert set(result) == {"label", "confidence", "probabilities", "top_k", "raw_label", "latency_ms", "model"}
    assert len(result["top_k"]) == 2 and result["model"] == f"tiny:{fmt}"
    assert abs(sum(result["probabilities"].values()) - 1.0) < 0.02
