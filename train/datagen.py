"""The built-in data set: procedurally drawn rock-paper-scissors hands, seeded, no downloads.

    python -m train.datagen --out data/rps --calibration-out calibration_data/rps

writes ``OUT/{train,test}/{paper,rock,scissors}/<class>_<index>.png`` and a flat, balanced calibration folder
``CALIBRATION/<class>_<index>.png``. Rock is a fist, paper a flat hand with five spread fingers, scissors a V
of index and middle finger. Everything that is not the gesture is drawn from distributions shared by all
classes: skin tone (light to dark), background (plain, gradient, texture, stripes, clutter), rotation (full
circle), mirror (left/right hand), palm or back of the hand, position, lighting (brightness, contrast, gamma,
colour cast, a shading gradient), blur and sensor noise. The fist is drawn larger and the open hand smaller,
so that colour, brightness and skin area alone do not tell the classes apart: only the shape does.

``style="camera"`` draws the same hands as one fixed camera rig sees them instead (the shifted style the teach
tests and ``make teach-demo`` use): a green cloth background, warm dim light, lens blur, vignetting and sensor
noise. The built-in model, trained on the drawn style, does badly on it; teaching on a few dozen such frames
on the device lifts it (device/teach/). Its images come from their own seed streams.

Every image has its own ``np.random.default_rng((seed, split, class, index))``: any one image can be
rebuilt alone, workers can render in any order, and train, test and calibration never share a stream. PNGs
are written without metadata at a fixed compression level, so the same seed gives byte-identical files
(with the same Pillow and numpy versions). ``OUT/dataset.json`` records the parameters: a second run with
the same ones finds the files and returns at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from device.atomic import atomic_write

CLASS_NAMES = ("paper", "rock", "scissors")
SPLITS = ("train", "test")
SPLIT_IDS = {"train": 0, "test": 1, "calibration": 2}  # part of every image's seed: streams never overlap
STYLES = ("drawn", "camera")  # drawn: the built-in set; camera: one fixed camera rig (a shifted style)
GENERATOR = "edgecam.train.datagen"
VERSION = 4  # bump when the drawing changes: folders written by another version are regenerated
MANIFEST = "dataset.json"
SUPERSAMPLE = 2  # draw at 2x, downscale with LANCZOS: smooth edges
PNG_COMPRESS_LEVEL = 6

# Apparent hand size (pixels per palm width, as a fraction of the image side) for each class. The fist is
# drawn bigger and the spread hand smaller, so the skin-area distributions of the classes overlap.
CLASS_SCALE = {"paper": (0.29, 0.41), "rock": (0.35, 0.49), "scissors": (0.31, 0.45)}
# Light to dark skin tones; a tone is drawn uniformly along this chain, then jittered.
SKIN_TONES = np.array([(255, 228, 210), (241, 194, 167), (224, 172, 135), (198, 140, 100),
                       (161, 104, 70), (122, 78, 52), (88, 56, 40), (62, 40, 30)], dtype=np.float64)


class DatasetExistsError(ValueError):
    """The output folder holds files that this generator did not write."""


# ----------------------------------------------------------------------------------------------- drawing


def _skin_colour(rng) -> np.ndarray:
    position = rng.uniform(0, len(SKIN_TONES) - 1)
    low = int(position)
    high = min(low + 1, len(SKIN_TONES) - 1)
    colour = SKIN_TONES[low] + (SKIN_TONES[high] - SKIN_TONES[low]) * (position - low)
    colour = colour * rng.uniform(0.92, 1.08) + rng.normal(0, 6, 3) + np.array([1, 0, -1]) * rng.normal(0, 6)
    return np.clip(colour, 20, 255)


def _random_colour(rng) -> np.ndarray:
    """Any colour, mostly muted (as walls, tables and clothes are), sometimes vivid."""
    grey = rng.uniform(0, 255)
    return np.clip(grey + (rng.uniform(0, 255, 3) - grey) * rng.uniform(0.15, 1.0), 0, 255)


def _background(rng, side: int) -> np.ndarray:
    """uint8 HxWx3: plain, gradient, blotchy texture, stripes; sometimes with clutter shapes."""
    kind = rng.choice(["plain", "gradient", "texture", "stripes"], p=[0.35, 0.35, 0.2, 0.1])
    base = _random_colour(rng)
    if kind == "plain":
        image = np.broadcast_to(base, (side, side, 3)).copy()
    elif kind == "gradient":
        other = _random_colour(rng)
        angle = rng.uniform(0, 2 * np.pi)
        coords = np.linspace(-1, 1, side)
        ramp = np.cos(angle) * coords[None, :] + np.sin(angle) * coords[:, None]
        ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-9)
        image = base + (other - base) * ramp[..., None]
    elif kind == "texture":
        cells = int(rng.integers(3, 16))
        blotches = base + rng.normal(0, rng.uniform(6, 20), (cells, cells, 3))
        small = Image.fromarray(np.clip(blotches, 0, 255).astype(np.uint8))
        image = np.asarray(small.resize((side, side), Image.BICUBIC), dtype=np.float64)
        image = image + rng.normal(0, rng.uniform(0, 4), (side, side, 1))  # grain
    else:
        other = np.clip(base + rng.normal(0, 30, 3), 0, 255)
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(0.04, 0.25) * side
        yy, xx = np.mgrid[0:side, 0:side]
        phase = (np.cos(angle) * xx + np.sin(angle) * yy) / period
        mix = (np.sin(2 * np.pi * phase) > rng.uniform(-0.5, 0.5)).astype(np.float64)
        image = base + (other - base) * mix[..., None]
    if rng.random() < 0.15:  # clutter: a few unrelated shapes, in all classes alike
        canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = rng.uniform(-0.2, 1.0, 2) * side
            w, h = rng.uniform(0.1, 0.45, 2) * side
            colour = tuple(int(c) for c in _random_colour(rng))
            if rng.random() < 0.5:
                draw.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
            else:
                draw.rectangle((x0, y0, x0 + w, y0 + h), fill=colour)
        return np.asarray(canvas)
    return np.clip(image, 0, 255).astype(np.uint8)


def _arm_angle(rng) -> float:
    """Rotation of the hand (radians, 0 = fingers up, arm from the bottom): mostly the arm comes in from
    the bottom or a side of the picture, as it does in front of a camera; one hand in eight at any angle."""
    side = rng.choice(5, p=[0.80, 0.08, 0.08, 0.02, 0.02])  # bottom, left, right, top, anywhere
    degrees = rng.uniform(0, 360) if side == 4 else (0, -90, 90, 180)[side] + rng.normal(0, (22, 15, 15, 15)[side])
    return math.radians(degrees)


class _Pose:
    """Hand coordinates (palm width 1, wrist at the origin, fingers towards +y) to canvas pixels."""

    def __init__(self, scale: float, angle: float, mirror: bool, offset=(0.0, 0.0)):
        self.scale, self.offset = scale, offset
        self.cos, self.sin = math.cos(angle), math.sin(angle)
        self.flip = -1.0 if mirror else 1.0

    def __call__(self, points) -> list:
        result = []
        for x, y in points:
            u, v = self.flip * x, -y  # image y grows downwards
            result.append((self.offset[0] + self.scale * (self.cos * u - self.sin * v),
                           self.offset[1] + self.scale * (self.sin * u + self.cos * v)))
        return result


def _polyline(start, angles_deg, lengths) -> list:
    """Joint positions of a finger: segments of LENGTHS at ANGLES (degrees from +y, positive towards +x)."""
    points = [tuple(start)]
    for angle, length in zip(angles_deg, lengths):
        radians = math.radians(angle)
        x, y = points[-1]
        points.append((x + length * math.sin(radians), y + length * math.cos(radians)))
    return points


def _superellipse(cx, cy, half_width, half_height, exponent, taper, count=48) -> list:
    points = []
    for t in np.linspace(0, 2 * np.pi, count, endpoint=False):
        c, s = math.cos(t), math.sin(t)
        x = half_width * math.copysign(abs(c) ** (2 / exponent), c)
        y = half_height * math.copysign(abs(s) ** (2 / exponent), s)
        x *= 1 - taper * (1 - (y + half_height) / (2 * half_height))  # narrower towards the wrist
        points.append((cx + x, cy + y))
    return points


def _hand_parts(rng, label: str, view: str) -> list:
    """The hand as drawing operations in hand coordinates, back to front.

    Each part is (kind, points, width, role): kind "limb" (thick polyline with round caps), "polygon" or
    "crease" (thin line); role picks the colour (skin, nail, crease). The forearm is added by the caller.
    """
    palm_height = rng.uniform(0.95, 1.12)
    palm_top = 0.12 + palm_height
    finger_scale = rng.uniform(0.85, 1.15)
    lengths = np.array([0.80, 0.90, 0.84, 0.64]) * finger_scale * rng.uniform(0.93, 1.07, 4)
    widths = np.array([0.215, 0.225, 0.21, 0.185]) * rng.uniform(0.88, 1.12)
    base_x = np.array([-0.36, -0.12, 0.12, 0.35]) + rng.normal(0, 0.015, 4)
    base_y = palm_top - np.array([0.16, 0.12, 0.15, 0.26])
    curl = rng.uniform(-3, 8)  # sideways bend per joint, the same hand-wide
    palm = ("polygon", _superellipse(0, 0.12 + palm_height / 2, 0.5, palm_height / 2,
                                     rng.uniform(2.4, 3.4), rng.uniform(0.05, 0.2)), 0.0, "skin")
    thumb_width = rng.uniform(0.23, 0.27)
    thumb_base = (-0.38 + rng.normal(0, 0.02), 0.38 + rng.normal(0, 0.05))

    if label == "paper":
        spread = rng.uniform(0.85, 1.7)
        angles = np.array([-15, -4, 7, 19]) * spread + rng.normal(0, 3, 4)
        extended, curled = [0, 1, 2, 3], []
        thumb_angle = rng.uniform(-70, -40)
        thumb = _polyline(thumb_base, [thumb_angle, thumb_angle + rng.uniform(5, 25)],
                          np.array([0.40, 0.32]) * rng.uniform(0.85, 1.15))
        thumb_in_front = False
    else:
        if label == "scissors":
            tilt = rng.normal(0, 5)
            half_v = rng.uniform(9, 20)
            angles = np.array([tilt - half_v, tilt + half_v * rng.uniform(0.5, 0.9), 0, 0])
            extended, curled = [0, 1], [2, 3]
        else:
            angles = np.zeros(4)
            extended, curled = [], [0, 1, 2, 3]
        if view == "palm":  # thumb folded across the curled fingers
            start = (thumb_base[0] - 0.06, thumb_base[1] + 0.05)
            across = rng.uniform(68, 90)
            thumb = _polyline(start, [across - 25, across], np.array([0.33, 0.30]) * rng.uniform(0.9, 1.15))
            thumb_in_front = True
        else:  # seen from the back: the thumb lies along the side of the fist
            thumb = _polyline(thumb_base, [rng.uniform(-35, -15), rng.uniform(5, 25)],
                              np.array([0.30, 0.22]) * rng.uniform(0.9, 1.1))
            thumb_in_front = False

    parts = []
    if not thumb_in_front:
        parts.append(("limb", thumb, thumb_width, "skin"))
    for finger in extended:
        joints = _polyline((base_x[finger], base_y[finger]),
                           [angles[finger] + curl * k for k in range(3)],
                           lengths[finger] * np.array([0.45, 0.30, 0.25]))
        parts.append(("limb", joints, widths[finger], "skin"))
        if view == "back":
            tip, before = np.array(joints[-1]), np.array(joints[-2])
            direction = (tip - before) / (np.linalg.norm(tip - before) + 1e-9)
            nail = [tuple(tip - direction * 0.13 * lengths[finger]), tuple(tip - direction * 0.02)]
            parts.append(("limb", nail, widths[finger] * 0.55, "nail"))
        for fraction in (0.45, 0.75):  # knuckle creases
            along = np.array(joints[0]) + (np.array(joints[-1]) - np.array(joints[0])) * fraction
            normal = np.array([1.0, 0.0]) * widths[finger] * 0.3
            parts.append(("crease", [tuple(along - normal), tuple(along + normal)], 0.02, "crease"))
    parts.append(palm)
    if view == "back":  # knuckles on the back of the hand
        for finger in range(4):
            x = base_x[finger]
            parts.append(("crease", [(x - 0.05, palm_top - 0.2), (x + 0.05, palm_top - 0.18)], 0.02, "crease"))
    for finger in curled:  # curled fingers: rounded stubs across the top of the palm
        x = base_x[finger] * 0.95
        top = palm_top + (0.10 if view == "palm" else 0.06) - (0.06 if finger == 3 else 0.0)
        depth = rng.uniform(0.38, 0.48) if view == "palm" else rng.uniform(0.16, 0.24)
        stub_width = widths[finger] * 1.12
        stub = [(x, top - stub_width / 2), (x + rng.normal(0, 0.01), top - depth)]
        parts.append(("limb", stub, stub_width, "skin"))
        if view == "palm":
            middle = top - depth * 0.55
            parts.append(("crease", [(x - stub_width * 0.3, middle), (x + stub_width * 0.3, middle)],
                          0.02, "crease"))
    if thumb_in_front:
        parts.append(("limb", thumb, thumb_width, "skin"))
    return parts


def _part_points(parts) -> np.ndarray:
    """Every point a part can reach (limb points padded by half the width): for the bounding box."""
    points = []
    for kind, joints, width, _role in parts:
        for x, y in joints:
            pad = width / 2
            points.extend([(x - pad, y - pad), (x + pad, y + pad)])
    return np.array(points)


def _draw_parts(draw, parts, pose: _Pose, colours: dict, outline_width: float) -> None:
    for kind, joints, width, role in parts:
        points = pose(joints)
        if kind == "polygon":
            draw.polygon(points, fill=colours[role], outline=colours["crease"], width=max(1, round(outline_width)))
            continue
        radius = width * pose.scale / 2
        layers = [(colours[role], radius)] if kind == "crease" else \
            [(colours["crease"], radius + outline_width), (colours[role], radius)]
        for colour, r in layers:
            draw.line(points, fill=colour, width=max(1, round(2 * r)), joint="curve")
            if kind == "limb":
                for x, y in points:
                    draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)


def render_hand(label: str, rng, size: int = 150, with_mask: bool = False, style: str = "drawn"):
    """One RGB image of SIZE x SIZE showing LABEL ('paper', 'rock' or 'scissors'), drawn with RNG.

    With WITH_MASK, also returns the hand's coverage (float HxW in 0..1, hand and bare forearm), which the
    tests use to check that skin area alone does not give the class away.
    """
    if label not in CLASS_NAMES:
        raise ValueError(f"Unknown class {label!r}; choose one of: {', '.join(CLASS_NAMES)}.")
    if style not in STYLES:
        raise ValueError(f"Unknown style {style!r}; choose one of: {', '.join(STYLES)}.")
    side = size * SUPERSAMPLE
    skin = _skin_colour(rng)
    background = _background(rng, side) if style == "drawn" else _camera_background(rng, side)
    for _ in range(10 if style == "drawn" else 0):  # keep some contrast between hand and background, as a photographer would
        if np.linalg.norm(background.mean(axis=(0, 1)) - skin) > 80:
            break
        background = _background(rng, side)
    view = "palm" if rng.random() < 0.5 else "back"
    parts = _hand_parts(rng, label, view)

    scale = rng.uniform(*CLASS_SCALE[label]) * side
    pose = _Pose(scale, _arm_angle(rng), bool(rng.random() < 0.5))
    corners = np.array(pose(_part_points(parts)))
    low, high = corners.min(axis=0), corners.max(axis=0)
    margin = 0.03 * side
    offset = []
    for axis in range(2):
        lo, hi = margin - low[axis], side - margin - high[axis]
        offset.append(rng.uniform(lo, hi) if lo < hi else (lo + hi) / 2)
    pose = _Pose(scale, math.atan2(pose.sin, pose.cos), pose.flip < 0, tuple(offset))

    shade = rng.uniform(0.6, 0.78)
    colours = {"skin": tuple(int(c) for c in skin), "crease": tuple(int(c) for c in skin * shade),
               "nail": tuple(int(c) for c in np.clip(skin * 1.08 + np.array([14, 6, 6]), 0, 255))}
    wrist_half = rng.uniform(0.3, 0.38)
    arm_length = 7.0  # always reaches out of the picture
    arm_half = wrist_half * rng.uniform(1.05, 1.3)
    forearm = [(-wrist_half, 0.3), (wrist_half, 0.3), (arm_half, -arm_length), (-arm_half, -arm_length)]
    sleeve = None
    if rng.random() < 0.5:  # a sleeve over part of the forearm, its colour shared by all classes
        cuff, half = rng.uniform(-1.4, -0.5), arm_half * 1.35
        sleeve = [(-half, cuff), (half, cuff), (half * 1.1, -arm_length - 1), (-half * 1.1, -arm_length - 1)]
        colours["sleeve"] = tuple(int(c) for c in _random_colour(rng))
    outline_width = max(1.0, 0.025 * scale)

    layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    _draw_hand(ImageDraw.Draw(layer), pose, forearm, sleeve, parts, colours, outline_width)
    image = Image.fromarray(background)
    image.paste(layer, (0, 0), layer)
    photometric = _photometric if style == "drawn" else camera_look
    image = photometric(rng, image.resize((size, size), Image.LANCZOS))
    if not with_mask:
        return image
    mask = Image.new("L", (side, side), 0)  # skin 255, sleeve 0
    _draw_hand(ImageDraw.Draw(mask), pose, forearm, sleeve, parts,
               {"skin": 255, "crease": 255, "nail": 255, "sleeve": 0}, outline_width)
    return image, np.asarray(mask.resize((size, size), Image.BILINEAR), dtype=np.float64) / 255


def _draw_hand(draw, pose, forearm, sleeve, parts, colours: dict, outline_width: float) -> None:
    width = round(outline_width)
    draw.polygon(pose(forearm), fill=colours["skin"], outline=colours["crease"], width=width)
    if sleeve is not None:
        edge = colours["sleeve"] if isinstance(colours["sleeve"], int) else \
            tuple(int(c * 0.7) for c in colours["sleeve"])
        draw.polygon(pose(sleeve), fill=colours["sleeve"], outline=edge, width=width)
    _draw_parts(draw, parts, pose, colours, outline_width)


def _photometric(rng, image: Image.Image) -> Image.Image:
    """Camera and lighting: blur, colour cast, shading gradient, brightness/contrast/gamma, noise."""
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    pixels = np.asarray(image, dtype=np.float64) / 255
    size = pixels.shape[0]
    pixels = pixels * rng.uniform(0.92, 1.08, 3)  # white balance
    angle = rng.uniform(0, 2 * np.pi)
    coords = np.linspace(-1, 1, size)
    ramp = np.cos(angle) * coords[None, :] + np.sin(angle) * coords[:, None]
    pixels = pixels * (1 + rng.uniform(0, 0.3) * ramp / np.sqrt(2))[..., None]  # soft light from one side
    contrast = rng.uniform(0.8, 1.2)
    pixels = (pixels - 0.5) * contrast + 0.5 + rng.uniform(-0.1, 0.1)
    pixels = np.clip(pixels, 0, 1) ** rng.uniform(0.8, 1.25)
    pixels = pixels * 255 + rng.normal(0, rng.uniform(0, 5), pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


def _camera_background(rng, side: int) -> np.ndarray:
    """The camera style's backdrop: a green cloth with a soft weave and a shadow, the same in every frame."""
    base = np.array([70.0, 140.0, 80.0]) * rng.uniform(0.9, 1.1) + rng.normal(0, 4, 3)
    yy, xx = np.mgrid[0:side, 0:side] / side
    weave = 6 * np.sin(2 * np.pi * xx * 40) * np.sin(2 * np.pi * yy * 40)
    shadow = 1 - 0.35 * np.clip((xx + yy - rng.uniform(0.9, 1.3)) * 2, 0, 1)
    image = (base[None, None, :] + weave[..., None]) * shadow[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def camera_look(rng, image: Image.Image) -> Image.Image:
    """One small camera in a dim room: lens blur, warm cast, low contrast, vignetting, strong sensor noise."""
    size = image.size[0]
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(1.2, 2.0) * size / 150))
    pixels = np.asarray(image, dtype=np.float64) / 255
    pixels = pixels * np.array([1.15, 0.95, 0.7]) * rng.uniform(0.55, 0.75)  # warm, dim
    pixels = (pixels - 0.3) * rng.uniform(0.7, 0.85) + 0.3
    coords = np.linspace(-1, 1, size)
    radius = np.sqrt(coords[None, :] ** 2 + coords[:, None] ** 2)
    pixels = pixels * (1 - 0.45 * np.clip(radius - 0.5, 0, None))[..., None]  # vignetting
    pixels = pixels * 255 + rng.normal(0, rng.uniform(10, 16), pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


def image_rng(seed: int, split: str, label: str, index: int, style: str = "drawn"):
    """The generator of one image: (seed, split, class, index[, style]) -> its own independent stream."""
    key = [seed, SPLIT_IDS[split], CLASS_NAMES.index(label), index]
    return np.random.default_rng(key if style == "drawn" else key + [STYLES.index(style)])


# ------------------------------------------------------------------------------------------------ writing


def _render_task(task) -> None:
    path, seed, split, label, index, size = task[:6]
    style = task[6] if len(task) > 6 else "drawn"
    image = render_hand(label, image_rng(seed, split, label, index, style), size, style=style)
    image.save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def _run_tasks(tasks: list, workers: int | None, title: str, progress: bool) -> None:
    """Render TASKS, with a pool when WORKERS > 1, showing 'TITLE: done/total images' on stderr."""
    workers = (os.cpu_count() or 1) if workers is None else workers
    show = progress and sys.stderr.isatty()
    total, done = len(tasks), 0

    def report(final: bool = False) -> None:
        if show or (progress and final):
            end = "\n" if final else ""
            print(f"\r{title}: {done}/{total} images", end=end, file=sys.stderr, flush=True)

    if workers <= 1 or total < 8:
        for task in tasks:
            _render_task(task)
            done += 1
            if done % 20 == 0:
                report()
    else:
        with Pool(min(workers, total)) as pool:
            for _ in pool.imap_unordered(_render_task, tasks, chunksize=8):
                done += 1
                if done % 20 == 0:
                    report()
    report(final=True)


def _read_manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("generator") == GENERATOR else None


def _write_manifest(folder: Path, manifest: dict) -> None:
    atomic_write(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _prepare(folder: Path, parameters: dict, expected_files, overwrite: bool) -> bool:
    """True if FOLDER already holds exactly this set. Otherwise make it ready to write, or refuse.

    Only files this generator wrote (named by the previous dataset.json) are ever removed; user files
    stay, with or without --overwrite.
    """
    if folder.exists() and not folder.is_dir():
        raise DatasetExistsError(f"{folder} is a file, not a folder. Choose another output folder.")
    previous = _read_manifest(folder) if folder.is_dir() else None
    if previous is not None:
        if previous.get("complete") and previous.get("parameters") == parameters and \
                all((folder / name).is_file() for name in expected_files(parameters)):
            return True
        wanted = set(expected_files(parameters))
        stale = [name for name in expected_files(previous.get("parameters") or {}) if name not in wanted]
        for name in stale:
            (folder / name).unlink(missing_ok=True)
    elif folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise DatasetExistsError(
            f"{folder} is not empty and was not written by train.datagen (it has no {MANIFEST}). "
            f"Choose an empty or new folder, or pass --overwrite to write the generated images into it "
            f"(files with other names are kept; nothing is deleted)."
        )
    folder.mkdir(parents=True, exist_ok=True)
    _write_manifest(folder, {"generator": GENERATOR, "parameters": parameters, "complete": False})
    return False


def _dataset_files(parameters: dict) -> list:
    names = []
    for split in SPLITS:
        count = parameters.get(f"{split}_per_class", 0)
        for label in parameters.get("classes", ()):
            names.extend(f"{split}/{label}/{label}_{index:04d}.png" for index in range(count))
    return names


def _calibration_files(parameters: dict) -> list:
    return [f"{label}_{index:04d}.png" for label in parameters.get("classes", ())
            for index in range(parameters.get("per_class", 0))]


def _check_counts(size: int, seed: int, **counts) -> None:
    for name, value in counts.items():
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a whole number >= 0, got {value!r}.")
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size!r}.")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}.")


def generate_dataset(out_dir, train_per_class: int = 840, test_per_class: int = 124, size: int = 150,
                     seed: int = 0, progress: bool = True, *, workers: int | None = None,
                     overwrite: bool = False, style: str = "drawn") -> dict:
    """Write OUT/{train,test}/{paper,rock,scissors}/<class>_<index>.png and OUT/dataset.json.

    Returns {"train": {class: count}, "test": {class: count}, "reused": bool}; "reused" is True when OUT
    already held this exact set (same parameters and generator version) and nothing was written.
    Raises DatasetExistsError for a non-empty folder not written by this generator, unless OVERWRITE.
    """
    _check_counts(size, seed, train_per_class=train_per_class, test_per_class=test_per_class)
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}.")
    out_dir = Path(out_dir)
    parameters = {"version": VERSION, "classes": list(CLASS_NAMES), "size": size, "seed": seed,
                  "train_per_class": train_per_class, "test_per_class": test_per_class}
    if style != "drawn":  # the drawn style's parameters stay as before, so existing folders are reused
        parameters["style"] = style
    counts = {split: {label: parameters[f"{split}_per_class"] for label in CLASS_NAMES} for split in SPLITS}
    if _prepare(out_dir, parameters, _dataset_files, overwrite):
        return {**counts, "reused": True}
    for split in SPLITS:
        tasks = []
        for label in CLASS_NAMES:
            (out_dir / split / label).mkdir(parents=True, exist_ok=True)
            tasks.extend((out_dir / split / label / f"{label}_{index:04d}.png", seed, split, label, index, size,
                          style) for index in range(parameters[f"{split}_per_class"]))
        _run_tasks(tasks, workers, split, progress)
    _write_manifest(out_dir, {"generator": GENERATOR, "parameters": parameters, "complete": True})
    return {**counts, "reused": False}


def generate_calibration(out_dir, per_class: int = 34, size: int = 150, seed: int = 1000, *,
                         workers: int | None = None, overwrite: bool = False, progress: bool = True) -> int:
    """Write a balanced, flat calibration folder OUT/<class>_<index>.png (+ dataset.json) for int8
    quantization; its images come from their own seed stream, never the train or test images.
    Returns the number of images (also when an identical folder is reused)."""
    return _calibration(out_dir, per_class, size, seed, workers, overwrite, progress)[0]


def _calibration(out_dir, per_class, size, seed, workers, overwrite, progress) -> tuple:
    """(image count, whether OUT already held this exact set)."""
    _check_counts(size, seed, per_class=per_class)
    out_dir = Path(out_dir)
    parameters = {"version": VERSION, "classes": list(CLASS_NAMES), "size": size, "seed": seed,
                  "per_class": per_class}
    total = per_class * len(CLASS_NAMES)
    if _prepare(out_dir, parameters, _calibration_files, overwrite):
        return total, True
    tasks = [(out_dir / f"{label}_{index:04d}.png", seed, "calibration", label, index, size)
             for label in CLASS_NAMES for index in range(per_class)]
    _run_tasks(tasks, workers, "calibration", progress)
    _write_manifest(out_dir, {"generator": GENERATOR, "parameters": parameters, "complete": True})
    return total, False


def write_contact_sheet(data_dir, out_png, per_class: int = 8, split: str = "train", tile: int = 112) -> Path:
    """A labelled grid PNG: one row per class (name on the left), the first PER_CLASS images of SPLIT."""
    data_dir, out_png = Path(data_dir), Path(out_png)
    folder = data_dir / split
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not classes:
        raise ValueError(f"{folder} has no class folders; generate the data first (python -m train.datagen).")
    label_width, gap = 110, 4
    sheet = Image.new("RGB", (label_width + per_class * (tile + gap) + gap, len(classes) * (tile + gap) + gap),
                      (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=20)
    for row, label in enumerate(classes):
        top = gap + row * (tile + gap)
        draw.text((10, top + tile // 2), label, fill=(0, 0, 0), font=font, anchor="lm")
        for column, path in enumerate(sorted((folder / label).glob("*.png"))[:per_class]):
            with Image.open(path) as image:
                thumbnail = image.convert("RGB").resize((tile, tile), Image.LANCZOS)
            sheet.paste(thumbnail, (label_width + gap + column * (tile + gap), top))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png, format="PNG", optimize=True)
    return out_png


# -------------------------------------------------------------------------------------------------- CLI


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m train.datagen",
        description="Generate the built-in rock-paper-scissors image set (procedurally drawn hands, seeded, "
                    "no downloads) and a calibration folder for int8 quantization.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="data folder to write: OUT/{train,test}/<class>/*.png")
    parser.add_argument("--calibration-out", default=None,
                        help="calibration folder to write (flat, <class>_<index>.png); none if not given")
    parser.add_argument("--train-per-class", type=int, default=840, help="training images per class")
    parser.add_argument("--test-per-class", type=int, default=124, help="held-out test images per class")
    parser.add_argument("--calibration-per-class", type=int, default=34, help="calibration images per class")
    parser.add_argument("--size", type=int, default=150, help="image height and width in pixels")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the train and test images")
    parser.add_argument("--calibration-seed", type=int, default=1000, help="base seed of the calibration images")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes")
    parser.add_argument("--contact-sheet", default=None, help="also write a labelled preview grid PNG here")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty folder not made by this tool (files are only added or "
                             "replaced, never deleted)")
    parser.add_argument("--style", choices=STYLES, default="drawn",
                        help="drawn: the built-in set; camera: one fixed camera rig (a shifted style, for teaching)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        result = generate_dataset(args.out, args.train_per_class, args.test_per_class, args.size, args.seed,
                                  workers=args.workers, overwrite=args.overwrite, style=args.style)
        summary = ", ".join(f"{sum(result[split].values())} {split}" for split in SPLITS)
        if result["reused"]:
            print(f"{args.out}: already holds this data set ({summary} images, same parameters); "
                  f"nothing to do (delete {Path(args.out) / MANIFEST} to force regeneration)")
        else:
            print(f"{args.out}: wrote {summary} images in {time.perf_counter() - started:.1f} s")
        if args.calibration_out:
            count, reused = _calibration(args.calibration_out, args.calibration_per_class, args.size,
                                         args.calibration_seed, args.workers, args.overwrite, True)
            print(f"{args.calibration_out}: {'already holds' if reused else 'wrote'} {count} calibration images")
        if args.contact_sheet:
            print(f"contact sheet: {write_contact_sheet(args.out, args.contact_sheet)}")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
