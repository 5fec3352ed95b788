"""Read an image folder (one sub-folder per class) into tf.data pipelines.

Layouts accepted (the public rock-paper-scissors set unzips into the first)::

    DATA/train/<class>/*.png   DATA/test/<class>/*.png    (test/ is the held-out set)
    DATA/<class>/*.jpg                                      (held-out set = validation split)

Images are decoded with Pillow (PNG, JPEG, BMP, GIF; RGB, RGBA, grayscale, palette, any size) and
converted to RGB exactly as the device's image source does. Files that are not readable images are
skipped with a warning that names them; nothing in DATA is ever modified.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from device.layout import IMAGE_SUFFIXES, TEST_FOLDER, TRAIN_FOLDER
from device.manifest import is_label

log = logging.getLogger("edgecam.train")



class DataError(ValueError):
    """The data folder cannot be used; the message says what to do."""


@dataclass
class Split:
    paths: list = field(default_factory=list)  # absolute paths
    labels: list = field(default_factory=list)  # class indices

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class ImageFolder:
    root: Path
    class_names: list
    train: Split
    validation: Split
    test: Split
    heldout_source: str  # "test-folder" or "validation-split"
    skipped: list  # (path, reason)
    train_folder: str = "."  # where the training images are, relative to root ("train" or ".")
    validation_grouping: str = "random"  # "file-name group" when frames come in runs (see group_key)

    def fingerprint(self) -> str:
        """sha256 over every used file's relative path, class and content: changes when the data does."""
        digest = hashlib.sha256()
        for split in (self.train, self.validation, self.test):
            for path, label in sorted(zip(split.paths, split.labels)):
                digest.update(f"{Path(path).relative_to(self.root)}\t{self.class_names[label]}\n".encode())
                digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
        return digest.hexdigest()


def _readable_image(path: Path) -> str | None:
    """None if Pillow can fully decode the file, else the reason it cannot."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
        return None
    except Exception as error:  # Pillow raises many types for bad files
        return f"{type(error).__name__}: {error}"


def _class_folders(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files_under(folder: Path) -> list:
    """Every file under FOLDER, following symlinked folders, hidden files and folders skipped; the paths stay
    under FOLDER as spelled (symlinks are not resolved, so they stay relative to the data root)."""
    found = []
    for directory, subdirectories, files in os.walk(folder, followlinks=True):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        found.extend(Path(directory) / name for name in files if not name.startswith("."))
    return sorted(found)


def _scan_classes(folder: Path, class_names: list, skipped: list) -> Split:
    split = Split()
    for index, name in enumerate(class_names):
        class_dir = folder / name
        files = _files_under(class_dir) if class_dir.is_dir() else []
        kept = 0
        for path in files:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append((path, f"not an image file type ({path.suffix or 'no extension'})"))
                continue
            reason = _readable_image(path)
            if reason:
                skipped.append((path, reason))
                continue
            split.paths.append(str(path))
            split.labels.append(index)
            kept += 1
        if kept == 0:
            raise DataError(
                f"Class folder {class_dir} holds no readable images. Add PNG or JPEG images to it, "
                "or remove the folder if that class is not wanted."
            )
    return split


def scan_image_folder(root, validation_split: float = 0.1, seed: int = 0) -> ImageFolder:
    """Find classes and images, validate every file, and split train/validation (stratified, seeded)."""
    root = Path(os.path.abspath(root))  # absolute, symlinks kept: every path stays relative to the root
    if not root.is_dir():
        raise DataError(
            f"Data folder {root} does not exist. Generate the built-in set with 'make data', "
            "or point --data at a folder with one sub-folder per class (e.g. DATA/train/rock/*.png)."
        )
    if not 0.0 <= validation_split < 0.9:
        raise DataError(f"--validation-split must be in [0, 0.9), got {validation_split}.")
    train_dir = root / TRAIN_FOLDER if (root / TRAIN_FOLDER).is_dir() else root
    test_dir = root / TEST_FOLDER if (root / TRAIN_FOLDER).is_dir() and (root / TEST_FOLDER).is_dir() else None
    class_names = [p.name for p in _class_folders(train_dir)]
    if len(class_names) < 2:
        raise DataError(
            f"{train_dir} has {len(class_names)} class folder(s) ({', '.join(class_names) or 'none'}); "
            "a classifier needs at least two. Put each class's images in its own sub-folder, "
            f"e.g. {train_dir}/rock/ and {train_dir}/paper/."
        )
    unfit = [name for name in class_names if not is_label(name)]
    if unfit:  # labels.txt holds one label a line: such a name would only fail at export, after the training
        raise DataError(
            f"class folder {unfit[0]!r} in {train_dir}: a class name must be one line of text, without control "
            "characters (a newline, a tab) or spaces at either end. Rename the folder (e.g. to "
            f"{' '.join(unfit[0].split()) or 'a plain name'!r}) and run again."
        )
    skipped: list = []
    pool = _scan_classes(train_dir, class_names, skipped)
    if test_dir is not None:
        extra = sorted(p.name for p in _class_folders(test_dir) if p.name not in class_names)
        if extra:
            raise DataError(
                f"{test_dir} has class folders that {train_dir} lacks: {', '.join(extra)}. "
                "Train and test must have the same classes."
            )
        test = _scan_classes(test_dir, class_names, skipped)
    else:
        test = Split()
    for path, reason in skipped:
        log.warning("skipping %s: %s", path, reason)
    if skipped:
        log.warning("skipped %d file(s) that are not readable images (listed above); nothing was changed",
                    len(skipped))

    train, validation, grouping = split_validation(pool, len(class_names), validation_split, seed)
    if test_dir is None:
        if not validation:
            raise DataError(
                f"{root} has no test/ folder and --validation-split is 0: there would be no held-out images. "
                "Add DATA/test/<class>/ or use --validation-split 0.1."
            )
        test = validation
        heldout = "validation-split"
    else:
        heldout = "test-folder"
        if not validation:  # validating on test/ would choose the checkpoint on the held-out images
            raise DataError(
                f"--validation-split is {validation_split} and {root} has a test/ folder: there would be no "
                "validation images, and validating on the test/ images would pick the checkpoint on the very "
                "images the held-out accuracy is reported on. Use --validation-split 0.1 (the default) so "
                "validation is cut from train/, or add more images per class."
            )
    return ImageFolder(root, class_names, train, validation, test, heldout, skipped,
                       train_folder=os.path.relpath(train_dir, root), validation_grouping=grouping)


_FRAME_NUMBER = re.compile(r"[-_ .]*\d+$")
MIN_GROUPS = 5  # fewer file-name groups than this in a class: split image by image


def group_key(path) -> str:
    """The file name without its trailing frame number: ``paper01-007.png`` -> ``paper01``,
    ``rock_20261128-0102_0003.jpg`` -> ``rock_20261128-0102``. Frames of one run share a key."""
    return _FRAME_NUMBER.sub("", Path(path).stem) or Path(path).stem


def split_validation(pool: Split, num_classes: int, validation_split: float, seed: int) -> tuple:
    """Stratified, seeded train/validation split -> (train, validation, grouping). Sets filmed as video hold
    near-identical consecutive frames: a random cut puts a frame's neighbour in validation, which then measures
    memory, saturates at 100% and picks the checkpoint on noise. So when a class's file names form at least
    MIN_GROUPS runs (group_key), whole runs go to one side; otherwise (e.g. rock_0001.png ... one run) the
    cut is image by image."""
    train, validation = Split(), Split()
    rng = random.Random(seed)
    groupings = set()
    for index in range(num_classes):
        members = [p for p, label in zip(pool.paths, pool.labels) if label == index]
        rng.shuffle(members)
        groups: dict = {}
        for path in members:
            groups.setdefault(group_key(path), []).append(path)
        target = int(round(len(members) * validation_split))
        if validation_split > 0 and len(members) >= 2:
            target = max(1, min(target, len(members) - 1))
        chosen: list = []
        if validation_split > 0 and len(groups) >= MIN_GROUPS:
            groupings.add("file-name group")
            for key in sorted(groups, key=lambda k: rng.random()):  # whole runs until the target is met
                if len(chosen) >= target:
                    break
                if len(chosen) + len(groups[key]) < len(members):  # never the whole class
                    chosen.extend(groups[key])
        else:
            groupings.add("random")
            chosen = members[:target]
        picked = set(chosen)
        for path in members:
            side = validation if path in picked else train
            side.paths.append(path)
            side.labels.append(index)
    return train, validation, "+".join(sorted(groupings)) or "random"


def decode_rgb(path) -> np.ndarray:
    """Decode any image file to an RGB uint8 HxWx3 array, as the device's image source does."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def make_dataset(split: Split, image_size: tuple, batch_size: int, *, shuffle: bool, seed: int,
                 augment=None, cache: bool = True, sample_weights=None):
    """tf.data: decode once (Pillow) -> resize (bilinear, as the device) -> cache -> shuffle -> batch ->
    augment (training only) -> prefetch. Pixel values stay 0..255 float32: the model normalises.
    SAMPLE_WEIGHTS (one float per image, e.g. a per-folder weight) makes the elements (image, label, weight)."""
    import tensorflow as tf

    height, width = image_size

    def load(path):
        image = tf.numpy_function(lambda p: decode_rgb(p.decode()), [path], tf.uint8)
        image.set_shape([None, None, 3])
        return tf.image.resize(tf.cast(image, tf.float32), [height, width], method="bilinear")

    paths = tf.data.Dataset.from_tensor_slices(split.paths)
    labels = tf.data.Dataset.from_tensor_slices(np.asarray(split.labels, dtype=np.int32))
    parts = (paths.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True), labels)
    if sample_weights is not None:
        parts += (tf.data.Dataset.from_tensor_slices(np.asarray(sample_weights, dtype=np.float32)),)
    dataset = tf.data.Dataset.zip(parts)
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if augment is not None:
        dataset = dataset.map(lambda x, *rest: (augment(x, training=True), *rest),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
