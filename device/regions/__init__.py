"""Regions: several fixed boxes of one camera view, each read on its own (its own classes and taught head).

    --region door=0.1,0.2,0.3,0.5        NAME=X,Y,W,H: the box's left, top, width and height as fractions
                                         of the frame (0..1), repeatable
    --regions-file /etc/edgecam/regions.toml

The settings file (TOML, read with Python's tomllib: no new dependency)::

    [regions.door]
    box = [0.1, 0.2, 0.3, 0.5]   # X, Y, W, H
    smoothing = 3                # optional: the daemon's --smoothing otherwise
    threshold = 0.7              # optional: the daemon's --threshold otherwise
    repeat = 3                   # optional: a new label only after this many identical results in a row (1: at once)

Which regions serve (one place decides, :func:`resolve`): inline ``--region NAME=X,Y,W,H`` flags, else the
state folder's ``STATE/regions.json`` (what the Teach view or ``python -m device regions`` saved), else
``--regions-file``. ``STATE/regions.json`` is replaced atomically; a running daemon reads it again when it
changes (no restart), unless inline flags chose its regions.

A box is cropped from the full frame as a view (no copy) at whole pixels: left = round(X * width), right =
round((X + W) * width), likewise rows; at least one pixel each way. The crop is then prepared exactly as a whole
frame is (device/preprocess.py), so a crop equal to a photo reads as that photo does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")  # a class name's rule (device/teach/dataset.py); always fullmatch
STATE_FILE = "regions.json"
MAX_REGIONS = 16
EXAMPLE = "door=0.1,0.2,0.3,0.5 (NAME=X,Y,W,H, fractions of the frame)"


class RegionError(ValueError):
    """A bad region (name, box, settings file): the message says what to write instead (exit 2)."""


@dataclass(frozen=True)
class Region:
    name: str
    x: float
    y: float
    width: float
    height: float
    smoothing: int | None = None  # None: the daemon's --smoothing
    threshold: float | None = None  # None: the daemon's --threshold
    repeat: int = 1  # a new label only after this many identical results in a row

    @property
    def box(self) -> tuple:
        return (self.x, self.y, self.width, self.height)

    def pixels(self, height: int, width: int) -> tuple:
        """-> (top, bottom, left, right) in whole pixels of a HEIGHT x WIDTH frame; never empty."""
        left = min(int(round(self.x * width)), width - 1)
        top = min(int(round(self.y * height)), height - 1)
        right = max(left + 1, min(width, int(round((self.x + self.width) * width))))
        bottom = max(top + 1, min(height, int(round((self.y + self.height) * height))))
        return top, bottom, left, right

    def crop(self, frame):
        """The box of FRAME (HxWxC) as a view: no copy of the frame."""
        top, bottom, left, right = self.pixels(frame.shape[0], frame.shape[1])
        return frame[top:bottom, left:right]

    def spec(self) -> str:
        return f"{self.name}={','.join(_number(value) for value in self.box)}"

    def describe(self) -> dict:
        entry = {"name": self.name, "box": list(self.box), "repeat": self.repeat}
        if self.smoothing is not None:
            entry["smoothing"] = self.smoothing
        if self.threshold is not None:
            entry["threshold"] = self.threshold
        return entry


def _number(value: float) -> str:
    return f"{value:g}"


def check_name(name) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise RegionError(f"region name {name!r} is not allowed: use 1-40 letters, digits, '-' or '_' "
                          "(e.g. door, left, parcel).")
    return name


def make_region(name, box, smoothing=None, threshold=None, repeat=1, where: str = "--region") -> Region:
    """Validate one region -> Region; RegionError saying what to write instead."""
    check_name(name)
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise RegionError(f"{where} {name}: the box needs 4 numbers X,Y,W,H, got {box!r}; e.g. {EXAMPLE}.")
    values = []
    for value in box:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RegionError(f"{where} {name}: {value!r} is not a number; e.g. {EXAMPLE}.")
        values.append(float(value))
    x, y, width, height = values
    if not (0 <= x < 1 and 0 <= y < 1 and width > 0 and height > 0):
        raise RegionError(f"{where} {name}={','.join(map(_number, values))}: X and Y must be 0 or more and under 1, "
                          f"W and H more than 0 (fractions of the frame); e.g. {EXAMPLE}.")
    if x + width > 1 + 1e-9 or y + height > 1 + 1e-9:
        raise RegionError(f"{where} {name}={','.join(map(_number, values))}: the box reaches past the frame's edge "
                          f"(X+W and Y+H must be at most 1); e.g. {EXAMPLE}.")
    width, height = min(width, 1 - x), min(height, 1 - y)
    if smoothing is not None and (isinstance(smoothing, bool) or not isinstance(smoothing, int) or smoothing < 1):
        raise RegionError(f"{where} {name}: smoothing must be a whole number of frames, at least 1; got {smoothing!r}.")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0 <= threshold <= 1):
        raise RegionError(f"{where} {name}: threshold must be a fraction between 0 and 1; got {threshold!r}.")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise RegionError(f"{where} {name}: repeat must be a whole number, at least 1; got {repeat!r}.")
    return Region(name, x, y, width, height, smoothing, None if threshold is None else float(threshold), repeat)


def parse_region(text: str) -> Region:
    """``NAME=X,Y,W,H`` -> Region (the --region flag)."""
    name, box = parse_reference(text)
    if box is None:
        raise RegionError(f"--region {text!r} needs a box here: NAME=X,Y,W,H, e.g. {EXAMPLE}.")
    return box


def region_flag(text: str) -> Region:
    """argparse's type for --region NAME=X,Y,W,H (argparse says which flag and exits 2 on a bad one)."""
    try:
        return parse_region(text)
    except RegionError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_reference(text: str) -> tuple:
    """``NAME`` or ``NAME=X,Y,W,H`` (commands that act on one region) -> (name, Region or None)."""
    if not isinstance(text, str):
        raise RegionError(f"--region {text!r}: write NAME or NAME=X,Y,W,H, e.g. {EXAMPLE}.")
    name, equals, box = text.strip().partition("=")
    check_name(name)
    if not equals:
        return name, None
    try:
        values = [float(part) for part in box.split(",")]
    except ValueError:
        raise RegionError(f"--region {text!r}: X,Y,W,H must be numbers, e.g. {EXAMPLE}.") from None
    return name, make_region(name, values)


def check_unique(regions: list, where: str = "--region") -> list:
    names = [region.name for region in regions]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise RegionError(f"{where}: region {', '.join(twice)} is given more than once: give each name one box.")
    if len(regions) > MAX_REGIONS:
        raise RegionError(f"{where}: {len(regions)} regions; at most {MAX_REGIONS} are read per frame.")
    return list(regions)


# ---- the settings file (TOML) and the state folder's regions.json ----------------------------------
def from_mapping(data, where: str) -> list:
    """{"regions": {NAME: {"box": [...], ...}}} (TOML) or {"regions": [{"name", "box", ...}]} (JSON) -> [Region]."""
    entries = data.get("regions") if isinstance(data, dict) else None
    if isinstance(entries, dict):
        entries = [dict(value, name=key) if isinstance(value, dict) else {"name": key, "box": value}
                   for key, value in entries.items()]
    if not isinstance(entries, list):
        raise RegionError(f"{where}: no [regions.NAME] tables; write e.g. [regions.door] box = [0.1, 0.2, 0.3, 0.5].")
    regions = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise RegionError(f"{where}: each region is a table with a box, e.g. [regions.door] box = [0.1, 0.2, 0.3, 0.5].")
        unknown = sorted(set(entry) - {"name", "box", "smoothing", "threshold", "repeat"})
        if unknown:
            raise RegionError(f"{where}: region {entry.get('name')!r} has unknown key(s) {', '.join(unknown)}; "
                              "known: box, smoothing, threshold, repeat.")
        regions.append(make_region(entry.get("name"), entry.get("box"), entry.get("smoothing"),
                                   entry.get("threshold"), entry.get("repeat", 1), where))
    return check_unique(regions, where)


def load_file(path) -> list:
    """--regions-file PATH (TOML) -> [Region]; RegionError naming the file and the fix."""
    import tomllib

    try:
        with open(path, "rb") as stream:
            data = tomllib.load(stream)
    except FileNotFoundError:
        raise RegionError(f"--regions-file {path} does not exist: create it (docs/regions.md) or leave the flag out."
                          ) from None
    except OSError as error:
        raise RegionError(f"--regions-file {path} cannot be read ({error.strerror}): check its permissions.") from None
    except tomllib.TOMLDecodeError as error:
        raise RegionError(f"--regions-file {path} is not valid TOML ({error}): fix that line.") from None
    return from_mapping(data, str(path))


def state_path(state_dir) -> Path | None:
    return Path(state_dir) / STATE_FILE if state_dir is not None else None


def load_state(state_dir) -> list | None:
    """STATE/regions.json -> [Region], or None when there is none (or no state folder)."""
    path = state_path(state_dir)
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise RegionError(f"{path} cannot be read ({error.strerror}): check its permissions or delete it.") from None
    try:
        data = json.loads(text)
    except ValueError as error:
        raise RegionError(f"{path} is not valid JSON ({error}): delete it and draw the regions again.") from None
    return from_mapping(data, str(path))


def save_state(state_dir, regions: list) -> Path:
    """Write STATE/regions.json atomically (a reader sees the old file or the new one, never half)."""
    from device.atomic import atomic_write

    if state_dir is None:
        raise RegionError("regions are kept in the state folder: pass --state-dir DIR (or set EDGECAM_STATE_DIR).")
    path = state_path(state_dir)
    atomic_write(path, json.dumps({"regions": [region.describe() for region in check_unique(regions)]},
                                       indent=2) + "\n")
    return path


def state_stamp(state_dir) -> tuple | None:
    """What changes when STATE/regions.json is replaced: (mtime_ns, size, inode), or None when missing."""
    path = state_path(state_dir)
    try:
        stat = os.stat(path) if path is not None else None
    except OSError:
        return None
    return None if stat is None else (stat.st_mtime_ns, stat.st_size, stat.st_ino)


# ---- which regions -------------------------------------------------------------------------------
def resolve(inline: list, regions_file=None, state_dir=None) -> tuple:
    """-> (the regions that serve, where they came from: "flags", "state", "file" or None for none)."""
    if inline:
        return check_unique(inline), "flags"
    saved = load_state(state_dir)
    if saved:
        return saved, "state"
    if regions_file:
        return load_file(regions_file), "file"
    return [], None


def find(reference: str, regions_file=None, state_dir=None) -> Region:
    """``--region NAME`` or ``NAME=X,Y,W,H`` for commands that act on one region -> Region (an inline box wins;
    NAME alone: its box from the device's settings, STATE/regions.json then --regions-file)."""
    name, inline = parse_reference(reference)
    if inline is not None:
        return inline
    known, _ = resolve([], regions_file, state_dir)
    for region in known:
        if region.name == name:
            return region
    where = "no regions are set on this device" if not known else f"this device has {', '.join(r.name for r in known)}"
    raise RegionError(f"--region {name}: {where}. Give its box inline (--region {name}=X,Y,W,H) or add it to the "
                      "device's regions (the Teach view, or --regions-file).")


def with_defaults(region: Region, smoothing: int, threshold: float) -> Region:
    """The region with the daemon's --smoothing and --threshold where it sets none of its own."""
    return replace(region, smoothing=region.smoothing if region.smoothing is not None else smoothing,
                   threshold=region.threshold if region.threshold is not None else threshold)
