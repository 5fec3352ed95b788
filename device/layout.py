"""The bundle's vocabulary, in one place: file names, model formats and their files, image suffixes, the
held-out list's format, and staged writes. Every stage (train/, convert/, device/, deploy/, bench/) imports
these names instead of spelling them; a new file kind is added here first.

A bundle is a folder::

    artifacts/NAME/
      manifest.json          MANIFEST: the single source of truth the device reads (device/manifest.py)
      labels.txt             LABELS: one label per line, in output order
      saved_model/           SAVED_MODEL: float32 NHWC RGB 0..255 -> class probabilities
      model.keras            KERAS_MODEL
      heldout.txt            HELDOUT: "label<TAB>path relative to dataset.root" per line
      history.csv training.png logs/ checkpoints/      (train/)
      tflite/model_FORMAT.tflite  parity.json parity.md quantization_debug.* edgetpu/   (convert/)
      heads/                 HEADS: classifier-head revisions taught on the device (device/teach/)

Staged writes (:class:`Stage`): a command that changes a bundle writes a complete new version into a hidden
staging folder beside it (``.NAME.staging``, unchanged files hard-linked, so it is cheap), and swaps it in only
when everything succeeded. On failure the previous bundle is exactly as it was and the failed output is kept
beside it for inspection (``NAME.failed-YYYYmmdd-HHMMSS``). Writers must replace files (write a temporary file,
then rename), never modify one in place: a hard-linked file is shared with the live bundle.

Standard library only: the device imports this module.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional

# ---- file and folder names -----------------------------------------------------------------
MANIFEST = "manifest.json"
LABELS = "labels.txt"
SAVED_MODEL = "saved_model"
KERAS_MODEL = "model.keras"
HELDOUT = "heldout.txt"
HISTORY = "history.csv"
TRAINING_PLOT = "training.png"
LOGS = "logs"
CHECKPOINTS = "checkpoints"
TFLITE_DIR = "tflite"
EDGETPU_DIR = "edgetpu"
PARITY_JSON = "parity.json"
PARITY_MD = "parity.md"
QUANT_DEBUG_CSV = "quantization_debug.csv"
QUANT_DEBUG_MD = "quantization_debug.md"
HEADS_DIR = "heads"
IMX500_FORMAT = "imx500"  # --model imx500: the AI Camera's network, on the sensor (device/imx500.py)
IMX500_DIR = "imx500"  # the AI Camera's packerOut.zip, memory report and fake-quantised outputs (convert --imx500)
IMX500_PACKER = f"{IMX500_DIR}/packerOut.zip"
IMX500_RPK = f"{IMX500_DIR}/network.rpk"  # made on the Pi by imx500-package (deploy/install.sh)
IMX500_OUTPUTS = f"{IMX500_DIR}/fake_quant_outputs.npz"
HEAD_FILE = "tflite/head.npz"  # the bundle's own classifier weights (W, b), written by convert/ beside the models

# A data folder: DATA/train/<class>/ (+ DATA/test/<class>/, the held-out set), or DATA/<class>/.
TRAIN_FOLDER = "train"
TEST_FOLDER = "test"

# Everything a bundle consists of: the only names a tool may remove or replace in a bundle folder.
BUNDLE_ENTRIES = (
    MANIFEST, LABELS, SAVED_MODEL, KERAS_MODEL, HELDOUT, HISTORY, TRAINING_PLOT, LOGS, CHECKPOINTS, TFLITE_DIR,
    PARITY_JSON, PARITY_MD, QUANT_DEBUG_CSV, QUANT_DEBUG_MD, EDGETPU_DIR, HEADS_DIR, IMX500_DIR,
)

# ---- model formats ---------------------------------------------------------------------------
CONVERTED_FORMATS = ("float32", "float16", "dynamic", "int8")   # what convert/ makes from the SavedModel
EDGETPU_FORMAT = "int8_edgetpu"                                 # compiled from int8 by edgetpu_compiler
MODEL_FORMATS = CONVERTED_FORMATS + (EDGETPU_FORMAT,)           # what a manifest may list


def model_filename(fmt: str) -> str:
    """``int8`` -> ``model_int8.tflite`` (the Edge TPU model is ``model_int8_edgetpu.tflite``)."""
    if fmt not in MODEL_FORMATS:
        raise ValueError(f"Unknown model format {fmt!r}; known: {', '.join(MODEL_FORMATS)}.")
    return f"model_{fmt}.tflite"


def model_path(fmt: str) -> str:
    """The file's path inside the bundle, as the manifest records it: ``tflite/model_int8.tflite``."""
    return f"{TFLITE_DIR}/{model_filename(fmt)}"


# ---- images ----------------------------------------------------------------------------------
# One list for training, calibration, held-out sets, the device's image-folder source and captured data.
# Pillow decodes all of them on a Pi (Raspberry Pi OS's python3-pil included).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


def is_image_file(path: os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def find_images(folder: os.PathLike) -> list:
    """Every image file under FOLDER (recursively, following symlinked folders), sorted, hidden files skipped."""
    root = Path(folder)
    found = []
    for directory, subdirectories, files in os.walk(root, followlinks=True):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        found.extend(Path(directory) / name for name in files
                     if not name.startswith(".") and is_image_file(name))
    return sorted(found)


# ---- the held-out list -------------------------------------------------------------------------
def format_heldout(entries: Iterable) -> str:
    """(label, relative path) pairs -> heldout.txt's text: ``label<TAB>relative/path`` per line, POSIX paths."""
    lines = []
    for label, relative in entries:
        if "\t" in label or "\n" in label:
            raise ValueError(f"label {label!r} must not contain a tab or a newline")
        lines.append(f"{label}\t{Path(relative).as_posix()}\n")
    return "".join(lines)


def parse_heldout_line(line: str) -> Optional[tuple]:
    """One line of heldout.txt -> (label, relative path); None for a blank line; ValueError when malformed."""
    if not line.strip():
        return None
    label, separator, relative = line.rstrip("\n").partition("\t")
    if not separator or not label or not relative:
        raise ValueError(f"expected 'label<TAB>relative/path', got {line!r}")
    return label, relative


# ---- staged writes ------------------------------------------------------------------------------
STAGING = "staging"          # .NAME.staging: convert/ (and any other writer)
TRAINING_RUN = "training"    # .NAME.training: a training run in progress, which --resume continues
class StageError(RuntimeError):
    """The bundle is being written by another command, or the staging folder cannot be made."""


class Stage:
    """Write a new version of BUNDLE beside it; swap it in with :meth:`commit`, or keep it aside with
    :meth:`fail`. Use as a context manager: an exception inside the block calls :meth:`fail` and re-raises.

        with Stage("artifacts/rps") as staging:       # a hard-linked copy of the current bundle
            write_new_files(staging)                   # replace files, never modify them in place
        # committed here; on an exception the bundle is untouched and artifacts/rps.failed-... holds the try

    A BUNDLE path that is a symbolic link (``artifacts/rps -> /mnt/disk/rps-v3``) is written where it points:
    the staging folder, the lock and a failed try sit beside the target, the target's name receives the new
    version, and the link is left as it is, pointing at it.

    ``start_empty=True`` starts from an empty folder instead of a copy (a fresh training run).
    ``keep_staging=True`` continues in a staging folder an earlier command left (``python -m train --resume``:
    the interrupted run lives there) instead of clearing it. ``purpose`` names the staging folder
    (``.NAME.PURPOSE``): training uses its own (TRAINING_RUN), so a conversion never clears a run that
    ``--resume`` could continue.
    """

    def __init__(self, bundle: os.PathLike, start_empty: bool = False, keep_staging: bool = False,
                 purpose: str = STAGING):
        self.bundle = _resolve_link(Path(bundle))
        self.path = staging_path(self.bundle, purpose)
        self.start_empty = start_empty
        self.keep_staging = keep_staging
        self.failed: Optional[Path] = None
        self._lock = None
        # Staging and training runs of a bundle exclude each other; any other purpose (a multi-worker run's
        # private folder, which never becomes the bundle) locks only itself.
        self._lock_target = self.bundle if purpose in (STAGING, TRAINING_RUN) else self.path

    def __enter__(self) -> Path:
        self.open()
        return self.path

    def __exit__(self, kind, value, traceback) -> bool:
        if kind is None:
            self.commit()
        elif self._lock is not None:
            self.fail()
        return False

    def open(self) -> Path:
        self.bundle.parent.mkdir(parents=True, exist_ok=True)
        self._lock = acquire_lock(self._lock_target)
        if self.path.is_symlink():
            self.path.unlink()  # an earlier version swapped a symlinked bundle's link in here: only the name goes
        if self.path.exists():
            if self.keep_staging:
                return self.path
            shutil.rmtree(self.path)  # left by a killed command (we hold the lock, so nobody is writing it)
        if self.start_empty or not self.bundle.is_dir():
            self.path.mkdir()
        else:
            shutil.copytree(self.bundle, self.path, symlinks=True, copy_function=_link_or_copy)
        return self.path

    def commit(self) -> None:
        """Swap the staging folder in for the bundle (atomically where the kernel can exchange two names)."""
        try:
            _swap_in(self.path, self.bundle)
        finally:
            self._release()

    def fail(self) -> Path:
        """Keep the staged output beside the bundle for inspection; return where it went."""
        try:
            if self.path.exists():
                self.failed = failed_path(self.bundle)
                os.rename(self.path, self.failed)
            return self.failed
        finally:
            self._release()

    def leave(self) -> Path:
        """Leave the staging folder where it is (an interrupted training run that --resume continues)."""
        self._release()
        return self.path

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _resolve_link(bundle: Path) -> Path:
    """BUNDLE itself, or where it points when it is a symbolic link (through every link in the chain)."""
    if not bundle.is_symlink():
        return bundle
    return Path(os.path.realpath(bundle))


def staging_path(bundle: os.PathLike, purpose: str = STAGING) -> Path:
    bundle = _resolve_link(Path(bundle))
    return bundle.with_name(f".{bundle.name}.{purpose}")


def failed_path(bundle: os.PathLike, now: Optional[float] = None) -> Path:
    bundle = _resolve_link(Path(bundle))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    candidate = bundle.with_name(f"{bundle.name}.failed-{stamp}")
    number = 1
    while candidate.exists():
        number += 1
        candidate = bundle.with_name(f"{bundle.name}.failed-{stamp}-{number}")
    return candidate


def clear_entries(folder: os.PathLike) -> None:
    """Remove what a bundle consists of (BUNDLE_ENTRIES) from FOLDER; anything else in it stays. In a staging
    folder this only unlinks the names: the live bundle's hard-linked files are not touched."""
    for name in BUNDLE_ENTRIES:
        path = Path(folder) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def writable_problem(folder: os.PathLike) -> Optional[str]:
    """None when files can be created in FOLDER (tried, not guessed from mode bits: root, read-only mounts and
    immutable folders differ), else what went wrong."""
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".edgecam-write-test-", dir=folder)
    except OSError as error:
        return error.strerror or type(error).__name__
    os.close(descriptor)
    os.unlink(probe)
    return None


def iter_failed(bundle: os.PathLike) -> Iterator[Path]:
    bundle = _resolve_link(Path(bundle))
    yield from sorted(bundle.parent.glob(f"{bundle.name}.failed-*"))


def acquire_lock(target: os.PathLike):
    """Hold ``.NAME.lock`` beside TARGET (a bundle, or a head store in the state folder) -> the open lock file;
    closing it releases the lock. StageError when another command holds it; OSError when it cannot be made."""
    bundle = Path(target)
    lock = open(bundle.with_name(f".{bundle.name}.lock"), "a+")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise StageError(f"{bundle} is being written by another edgecam command (its lock "
                         f"{lock.name} is held). Wait for it to finish, then try again.") from None
    return lock


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # a file system without hard links, or across devices
        shutil.copy2(source, destination)


_RENAME_EXCHANGE = 2


def _exchange(first: Path, second: Path) -> bool:
    """Swap two names atomically with renameat2(RENAME_EXCHANGE) (Linux 3.15+); False when not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    if ctypes.get_errno() in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(second))


def _swap_in(staging: Path, bundle: Path) -> None:
    if not bundle.exists():
        os.rename(staging, bundle)
        return
    if _exchange(staging, bundle):  # staging now holds the old bundle
        shutil.rmtree(staging, ignore_errors=True)
        return
    previous = bundle.with_name(f".{bundle.name}.previous")
    if previous.exists():
        shutil.rmtree(previous)
    os.rename(bundle, previous)
    os.rename(staging, bundle)
    shutil.rmtree(previous, ignore_errors=True)
