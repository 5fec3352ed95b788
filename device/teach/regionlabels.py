"""Frames labelled per region: the data set keeps the camera's FULL frame and, beside it, a label for each region.

    DATASET/
      .regions/frames/20261206-021500-0001.jpg     the whole frame (hidden: a whole-frame teach never reads it)
      regions.jsonl                                one line per labelling: {"file", "labels": {REGION: LABEL},
                                                   "boxes": {REGION: [X, Y, W, H]} (where the box was), "time"};
                                                   {"file", "deleted": true} forgets a frame

One frame may carry labels for several regions; a later line for the same frame and region replaces the earlier
label (null: no label any more). Because the frame is whole, moving a box and teaching again crops every
recorded frame anew: nothing recorded is lost. The crop is made at teach time (device/regions/__init__.py), so the
embedding cache is keyed by frame and box (device/teach/teaching.py).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from device.teach.dataset import DatasetFull, check_class_name, disk_full, encode_jpeg, link_new, write_temporary

FOLDER = ".regions"
FRAMES = "frames"
FILE = "regions.jsonl"


def _append(root: Path, record: dict) -> None:
    """One append of one whole line (lines of other writers never interleave with it)."""
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
    descriptor = os.open(root / FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)


def save(dataset, frame, labels: dict, boxes: dict, source: str = "") -> str:
    """Write FRAME (the whole RGB frame) with LABELS ({region: label}) -> its path relative to the data set.
    DatasetFull when the data set's limits say stop (the same limits as whole-frame frames)."""
    for label in labels.values():
        check_class_name(label)
    content = encode_jpeg(frame)
    folder = dataset.root / FOLDER / FRAMES
    with dataset.lock:
        reason = dataset.blocked(len(content))
        if reason:
            raise DatasetFull(reason)
        now = time.time()
        with disk_full(dataset.root):
            folder.mkdir(parents=True, exist_ok=True)
            temporary = write_temporary(folder, content)
            try:
                stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
                for number in range(1, 10_000):
                    name = f"{stamp}-{number:04d}.jpg"
                    if link_new(temporary, folder / name):
                        break
                else:
                    raise OSError(f"no free frame name in {folder} for {stamp}")
            finally:
                temporary.unlink(missing_ok=True)
            relative = f"{FOLDER}/{FRAMES}/{name}"
            try:
                _append(dataset.root, {"file": relative, "labels": dict(labels),
                                       "boxes": {name: list(box) for name, box in boxes.items()},
                                       "time": round(now, 3), "source": source})
            except BaseException:
                (dataset.root / relative).unlink(missing_ok=True)
                raise
        dataset.bytes += len(content)
    return relative


def read(root) -> dict:
    """regions.jsonl -> {file: {region: label}} for the frames still there (later lines win; torn lines skipped)."""
    root = Path(root)
    frames: dict = {}
    try:
        stream = open(root / FILE, encoding="utf-8")
    except FileNotFoundError:
        return frames
    with stream:
        for line in stream:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or not isinstance(record.get("file"), str):
                continue
            if record.get("deleted"):
                frames.pop(record["file"], None)
                continue
            labels = frames.setdefault(record["file"], {})
            for region, label in (record.get("labels") or {}).items():
                if label is None:
                    labels.pop(region, None)
                else:
                    labels[region] = label
    return {file: labels for file, labels in frames.items() if labels and (root / file).is_file()}


def counts(root, region: str) -> dict:
    """{label: frames} of REGION."""
    found: dict = {}
    for labels in read(root).values():
        if region in labels:
            found[labels[region]] = found.get(labels[region], 0) + 1
    return dict(sorted(found.items()))
