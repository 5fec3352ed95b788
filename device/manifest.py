"""The model bundle's manifest: the one contract between train/, convert/ and device/.

A bundle is a folder::

    artifacts/NAME/
      manifest.json        <- this schema; the single source of truth the device reads
      labels.txt           one label per line, in output order
      saved_model/         serving signature: float32 NHWC RGB 0..255 -> class probabilities
      model.keras
      heldout.txt          held-out images (relative to dataset.root) used for accuracy parity
      tflite/model_*.tflite (written by convert/)

Standard library only (dataclasses + json), so the device needs no extra package to read it.
Host tools write it with :func:`save_manifest`; the device reads it with :func:`load_manifest`.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from device.atomic import atomic_write
from device.layout import HELDOUT, KERAS_MODEL, MODEL_FORMATS, SAVED_MODEL
from device.layout import LABELS as LABELS_FILENAME
from device.layout import MANIFEST as MANIFEST_FILENAME

SCHEMA_VERSION = 1
COLOUR_ORDERS = ("RGB", "BGR")
RESIZE_METHODS = ("bilinear",)
# What convert/ found when it last wrote the models: "" (not converted yet), or one of these.
PARITY_PASSED, PARITY_FAILED, PARITY_SKIPPED = "passed", "failed", "skipped"
PARITY_STATES = (PARITY_PASSED, PARITY_FAILED, PARITY_SKIPPED)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FIX = "Re-export the bundle (python -m train ..., then python -m convert ...) or restore manifest.json."


class ManifestError(ValueError):
    """The manifest is missing, unreadable or does not follow the schema. The message says how to fix it."""


@dataclass
class InputSpec:
    """What the model expects as input. The model itself normalises (Rescaling(1/255) inside it)."""

    height: int
    width: int
    channels: int = 3
    colour_order: str = "RGB"
    value_range: tuple = (0.0, 255.0)
    dtype: str = "float32"
    layout: str = "NHWC"
    # Resize contract: bilinear with half-pixel centres, no antialiasing (tf.image.resize's default).
    resize: str = "bilinear"


@dataclass
class DatasetInfo:
    root: str = ""
    fingerprint: str = ""
    num_train: int = 0
    num_validation: int = 0
    num_test: int = 0
    heldout_source: str = ""  # "test-folder" or "validation-split"
    skipped_files: int = 0
    # Where the training images are, relative to root ("train" or "."; "" in bundles from before it was
    # recorded): convert/ calibrates int8 on them when no calibration folder is given.
    train_folder: str = ""
    validation_grouping: str = ""  # "random" or "file-name group" (runs of frames kept on one side)
    # Several --data folders: one dict per folder, in --data order:
    # {root, weight, num_test, test_accuracy, heldout_source} (root is the folder; dataset.root their common parent)
    sources: list = field(default_factory=list)


@dataclass
class ArchitectureInfo:
    """What the network is and where its starting weights came from (written by train/)."""

    name: str = ""  # reference, small, mobilenet_v2, mobilenet_v3_small
    alpha: Optional[float] = None  # MobileNet width multiplier
    input_size: int = 0
    weights: str = ""  # imagenet, none, file, bundle (--init-from)
    weights_file: str = ""
    weights_sha256: str = ""
    init_from: str = ""  # --init-from BUNDLE
    new_head: bool = False  # --init-from with a different class list: the final Dense was made anew
    frozen_blocks: int = 0  # blocks kept fixed while fine-tuning (--freeze)
    blocks: int = 0
    parameters: int = 0


@dataclass
class ModelFile:
    """One TFLite model in the bundle (written by convert/)."""

    format: str
    file: str  # relative to the bundle
    sha256: str
    size_bytes: int
    input_dtype: str
    output_dtype: str
    input_scale: float = 0.0
    input_zero_point: int = 0
    output_scale: float = 0.0
    output_zero_point: int = 0
    accuracy: Optional[float] = None
    agreement: Optional[float] = None
    latency_ms: Optional[float] = None
    # Outputs, by position in the interpreter's output list. A model converted with an embedding output
    # (convert/ since the teach feature) has two: the probabilities and the classifier's input. -1: none.
    output_index: int = 0
    embedding_index: int = -1
    embedding_dtype: str = ""
    embedding_scale: float = 0.0
    embedding_zero_point: int = 0
    # TFLite builtin op -> version the model uses, and runtime module -> lowest measured version that runs
    # them all (None: no measured version does); see device/opversions.py. Empty in older bundles.
    ops: dict = field(default_factory=dict)
    min_runtimes: dict = field(default_factory=dict)
    # This format's own parity verdict (PARITY_STATES; convert/ writes it): "" in bundles converted before it was
    # recorded, and for the Edge TPU model, whose parity needs an Edge TPU to measure. device/tune.py reads it.
    parity: str = ""


@dataclass
class EmbeddingInfo:
    """The classifier head the bundle's models end in: ``probabilities = softmax(embedding @ W + b)``.

    ``head_file`` (numpy .npz with ``weights`` [size, classes] and ``bias`` [classes]) holds the bundle's own
    W and b, so the device can fit a new head on the embedding output (device/teach/) and still go back to
    this one (revision 0)."""

    size: int
    layer: str = ""
    head_file: str = ""
    head_sha256: str = ""
    drift_file: str = ""  # the bundle's own head's drift reference per format (device/drift.py), by convert
    drift_sha256: str = ""


@dataclass
class Imx500Info:
    """The model for the Raspberry Pi AI Camera (Sony IMX500: the network runs on the sensor), written by
    ``python -m convert BUNDLE --imx500``. Not a TFLite format: the device reads its outputs from each frame's
    metadata (device/imx500.py). Outputs arrive on an 8-bit grid: value = integer * scale."""

    file: str  # imx500/packerOut.zip, relative to the bundle (imx500-package makes network.rpk of it on the Pi)
    sha256: str
    size_bytes: int
    format: str = "imx500"  # what the file is: Sony's packer output for imx500-package (not a TFLite model)
    converter_version: str = ""  # imx500-converter
    mct_version: str = ""  # Model Compression Toolkit
    memory_usage_bytes: int = 0  # the converter's memory report: what the network needs on the chip
    memory_available_bytes: int = 0
    fit_in_chip: bool = False
    memory_report: str = ""  # imx500/memory_report.json
    input_scale: float = 0.0  # the sensor's input tensor: normalised value = integer * input_scale
    input_signed: bool = False
    normalisation: list = field(default_factory=list)  # [scale, offset]: 0..255 -> the network's input
    output_index: int = 0  # position of the probabilities among imx500.get_outputs()
    output_scale: float = 0.0
    output_signed: bool = False
    embedding_index: int = -1  # position of the embedding (-1: none)
    embedding_scale: float = 0.0
    embedding_signed: bool = False
    outputs_file: str = ""  # imx500/fake_quant_outputs.npz: the fake-quantised model on the held-out images
    parity: str = ""
    accuracy: Optional[float] = None
    agreement: Optional[float] = None


@dataclass
class Manifest:
    name: str
    labels: list
    input: InputSpec
    schema_version: int = SCHEMA_VERSION
    test_accuracy: Optional[float] = None
    dataset: DatasetInfo = field(default_factory=DatasetInfo)
    training: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    models: dict[str, ModelFile] = field(default_factory=dict)  # format -> ModelFile
    saved_model: str = SAVED_MODEL
    keras_model: str = KERAS_MODEL
    heldout_file: str = HELDOUT
    created_utc: str = ""
    parity: str = ""  # PARITY_STATES: deploy/bundle.py refuses "failed" and "skipped" without --force
    calibration: str = ""  # what the int8 model was calibrated on (convert/)
    embedding: Optional[EmbeddingInfo] = None  # None: converted before embeddings (re-convert to teach)
    imx500: Optional[Imx500Info] = None  # the AI Camera's model (convert --imx500), None: not converted for it
    architecture: ArchitectureInfo = field(default_factory=ArchitectureInfo)

    # ---- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str = "manifest") -> "Manifest":
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: expected a JSON object at the top level, got {type(data).__name__}.")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(
                f"{source}: schema_version is {version!r}, this edgecam reads version {SCHEMA_VERSION}. "
                "Re-export the bundle with the same edgecam version as the device (python -m train ...)."
            )
        manifest = _build(cls, data, source, "")
        manifest.validate(source)
        return manifest

    def validate(self, source: str = "manifest") -> None:
        """Raise ManifestError naming the first field that is wrong and how to fix it."""
        _build(type(self), self.to_dict(), source, "")  # every field's type, from the annotations
        if not isinstance(self.labels, list) or len(self.labels) < 2:
            raise ManifestError(f"{source}: 'labels' must list at least two class names, got {self.labels!r}.")
        if not all(isinstance(label, str) and label for label in self.labels):
            raise ManifestError(f"{source}: every label must be a non-empty string, got {self.labels!r}.")
        if len(set(self.labels)) != len(self.labels):
            raise ManifestError(f"{source}: labels must be unique, got {self.labels!r}.")
        unfit = [label for label in self.labels if not is_label(label)]
        if unfit:
            raise ManifestError(f"{source}: every label must be one line of text, without control characters or "
                                f"spaces at either end (labels.txt holds one a line), got {unfit!r}. Rename the "
                                "class folders and train again.")
        spec = self.input
        for name in ("height", "width", "channels"):
            value = getattr(spec, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ManifestError(f"{source}: input.{name} must be a positive integer, got {value!r}.")
        if spec.channels != 3:
            raise ManifestError(f"{source}: input.channels must be 3 (RGB or BGR), got {spec.channels}.")
        if spec.colour_order not in COLOUR_ORDERS:
            raise ManifestError(
                f"{source}: input.colour_order must be one of {COLOUR_ORDERS}, got {spec.colour_order!r}."
            )
        if spec.resize not in RESIZE_METHODS:
            raise ManifestError(f"{source}: input.resize must be one of {RESIZE_METHODS}, got {spec.resize!r}.")
        if (len(spec.value_range) != 2 or not all(_is_number(v) for v in spec.value_range)
                or not spec.value_range[0] < spec.value_range[1]):
            raise ManifestError(f"{source}: input.value_range must be [low, high], got {spec.value_range!r}.")
        for fmt, entry in self.models.items():
            if fmt not in MODEL_FORMATS:
                raise ManifestError(f"{source}: unknown model format {fmt!r}; known: {MODEL_FORMATS}.")
            if fmt != entry.format:
                raise ManifestError(f"{source}: models.{fmt}.format is {entry.format!r}; it must equal its key "
                                    f"{fmt!r}. {_FIX}")
            if not entry.file or Path(entry.file).is_absolute() or ".." in Path(entry.file).parts:
                raise ManifestError(
                    f"{source}: models.{fmt}.file must be a path inside the bundle, got {entry.file!r}."
                )
            if entry.parity and entry.parity not in PARITY_STATES:
                raise ManifestError(f"{source}: models.{fmt}.parity must be one of {PARITY_STATES} (or empty), "
                                    f"got {entry.parity!r}. {_FIX}")
            if not _SHA256.fullmatch(entry.sha256):
                raise ManifestError(
                    f"{source}: models.{fmt}.sha256 must be 64 lowercase hex digits (the file's hash), got "
                    f"{entry.sha256!r}: without it the model file cannot be verified. Re-run python -m convert "
                    "on the bundle, or copy the bundle again."
                )
        if self.parity and self.parity not in PARITY_STATES:
            raise ManifestError(f"{source}: parity must be one of {PARITY_STATES} (or empty), got {self.parity!r}.")
        if self.embedding is not None:
            head = self.embedding.head_file
            if not isinstance(self.embedding.size, int) or self.embedding.size < 1:
                raise ManifestError(f"{source}: embedding.size must be a positive integer, "
                                    f"got {self.embedding.size!r}. Re-convert the bundle (python -m convert).")
            if head and (Path(head).is_absolute() or ".." in Path(head).parts):
                raise ManifestError(f"{source}: embedding.head_file must be a path inside the bundle, got {head!r}.")
            reference = self.embedding.drift_file
            if reference and (Path(reference).is_absolute() or ".." in Path(reference).parts):
                raise ManifestError(f"{source}: embedding.drift_file must be a path inside the bundle, got "
                                    f"{reference!r}.")


# ---- generic type checks, from the dataclass annotations -------------------------------------
def _build(cls, data: Any, source: str, where: str):
    """DATA (parsed JSON) -> an instance of dataclass CLS, every field checked against its annotation; unknown
    keys are ignored (a newer edgecam may add optional fields). ManifestError names the field and the fix."""
    if not isinstance(data, dict):
        what = f"field '{where}'" if where else "the manifest"
        raise ManifestError(f"{source}: {what} must be a JSON object, got {_kind(data)} {_short(data)}. {_FIX}")
    hints = _type_hints(cls)
    values = {}
    for spec in dataclasses.fields(cls):
        name = f"{where}.{spec.name}" if where else spec.name
        if spec.name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ManifestError(f"{source}: required field '{name}' is missing. {_FIX}")
            continue
        values[spec.name] = _check(data[spec.name], hints[spec.name], source, name)
    return cls(**values)


_UNION_TYPES = (typing.Union, getattr(types, "UnionType", typing.Union))  # X | Y is Python 3.10+


def _type_hints(cls) -> dict:
    try:
        return typing.get_type_hints(cls)
    except TypeError:  # an 'X | None' annotation on Python 3.9 (Pi OS bullseye): structure checks only
        return {spec.name: Any for spec in dataclasses.fields(cls)}


def _check(value: Any, hint: Any, source: str, name: str) -> Any:
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in _UNION_TYPES:
        if value is None and type(None) in arguments:
            return None
        problems = []
        for option in (a for a in arguments if a is not type(None)):
            try:
                return _check(value, option, source, name)
            except ManifestError as error:
                problems.append(error)
        raise problems[0]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source, name)
    if hint is float:
        if _is_number(value):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint in (str, bool):
        if isinstance(value, hint):
            return value
    elif (origin or hint) in (list, tuple):
        if isinstance(value, (list, tuple)):
            if origin is list and arguments or origin is tuple and arguments[-1:] == (...,):
                items = [_check(item, arguments[0], source, f"{name}[{index}]") for index, item in enumerate(value)]
            else:
                items = list(value)
            return tuple(items) if (origin or hint) is tuple else items
    elif (origin or hint) is dict:
        if isinstance(value, dict):
            if len(arguments) != 2:
                return value
            return {key: _check(item, arguments[1], source, f"{name}.{key}") for key, item in value.items()}
    else:
        return value  # an annotation this checker does not know: accept as is
    expected = {float: "a number", int: "an integer", str: "a string", bool: "true or false", list: "a list",
                tuple: "a list", dict: "a JSON object"}[origin or hint]
    raise ManifestError(f"{source}: field '{name}' must be {expected}, got {_kind(value)} {_short(value)}. {_FIX}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool, type(None))) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---- labels -----------------------------------------------------------------------------
LABEL = re.compile(r"[^\x00-\x1f\x7f]+")  # one line of labels.txt: no newline, tab or other control character


def is_label(text) -> bool:
    """Whether TEXT can be a class label: it reads back from labels.txt unchanged (always fullmatch)."""
    return isinstance(text, str) and LABEL.fullmatch(text) is not None and text == text.strip()


# ---- files ------------------------------------------------------------------------------
def manifest_path(bundle: os.PathLike) -> Path:
    return Path(bundle) / MANIFEST_FILENAME


def load_manifest(bundle: os.PathLike) -> Manifest:
    """Read and validate ``BUNDLE/manifest.json``; raise ManifestError with the path and the fix."""
    path = manifest_path(bundle)
    if not Path(bundle).is_dir():
        raise ManifestError(
            f"Bundle folder {bundle} does not exist. Train one with: python -m train --out {bundle}"
        )
    if not path.is_file():
        raise ManifestError(
            f"{path} is missing: {bundle} is not an edgecam bundle. "
            "Point --bundle at a folder written by 'python -m train' (e.g. artifacts/rps)."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ManifestError(unreadable(path, error)) from None
    except UnicodeDecodeError as error:
        raise ManifestError(f"{path} is not text ({error}). Restore it from your training machine or re-export "
                            "the bundle.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ManifestError(
            f"{path} is not valid JSON ({error}). Restore it from your training machine or re-export the bundle."
        ) from None
    manifest = Manifest.from_dict(data, source=str(path))
    check_labels_file(bundle, manifest)
    return manifest


def unreadable(path: os.PathLike, error: OSError) -> str:
    """The message for a bundle file that cannot be read: what happened (not "malformed") and what to do."""
    if error.errno in (errno.EACCES, errno.EPERM):
        return (f"{path} cannot be read (Permission denied): make the bundle readable for the user that runs "
                "edgecam (the unit's User=edgecam on a device), e.g. chmod -R a+rX BUNDLE, or copy it again.")
    return f"{path} cannot be read ({error.strerror or error}). Copy the bundle again."


def check_labels_file(bundle: os.PathLike, manifest: Manifest) -> None:
    """labels.txt, when the bundle has one, must list the manifest's labels in the same order."""
    path = Path(bundle) / LABELS_FILENAME
    if not path.is_file():
        return
    try:
        on_disk = read_labels(bundle)
    except OSError as error:
        raise ManifestError(unreadable(path, error)) from None
    except UnicodeDecodeError as error:
        raise ManifestError(f"{path} is not text ({error}). Copy the bundle again.") from None
    if on_disk != manifest.labels:
        raise ManifestError(
            f"{path} lists {on_disk} but {manifest_path(bundle)} lists labels {manifest.labels}: the two files "
            "come from different exports. Copy the whole bundle again (or re-export it with python -m train)."
        )


def save_manifest(manifest: Manifest, bundle: os.PathLike) -> Path:
    """Validate, then write atomically (temp file + rename): a crash never leaves half a manifest."""
    manifest.validate()
    path = manifest_path(bundle)
    atomic_write(path, manifest.to_json())
    return path


def read_labels(bundle: os.PathLike) -> list:
    path = Path(bundle) / LABELS_FILENAME
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sha256_file(path: os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
