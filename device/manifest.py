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
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from device.layout import LABELS as LABELS_FILENAME
from device.layout import MANIFEST as MANIFEST_FILENAME
from device.layout import MODEL_FORMATS

SCHEMA_VERSION = 1
COLOUR_ORDERS = ("RGB", "BGR")
RESIZE_METHODS = ("bilinear",)


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
    models: dict = field(default_factory=dict)  # format -> ModelFile
    saved_model: str = "saved_model"
    keras_model: str = "model.keras"
    heldout_file: str = "heldout.txt"
    created_utc: str = ""
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
        try:
            input_spec = InputSpec(**_known(InputSpec, _require(data, "input", dict, source)))
            dataset = DatasetInfo(**_known(DatasetInfo, data.get("dataset") or {}))
            models = {
                fmt: ModelFile(**_known(ModelFile, entry))
                for fmt, entry in (data.get("models") or {}).items()
            }
            architecture = ArchitectureInfo(**_known(ArchitectureInfo, data.get("architecture") or {}))
            fields = _known(cls, data)
            fields.update(input=input_spec, dataset=dataset, models=models, architecture=architecture)
            manifest = cls(**fields)
        except TypeError as error:  # a required field is missing in a nested object
            raise ManifestError(f"{source}: {error}. Re-export the bundle (python -m train ...).") from None
        manifest.input.value_range = tuple(manifest.input.value_range)
        manifest.validate(source)
        return manifest

    def validate(self, source: str = "manifest") -> None:
        """Raise ManifestError naming the first field that is wrong and how to fix it."""
        if not isinstance(self.labels, list) or len(self.labels) < 2:
            raise ManifestError(f"{source}: 'labels' must list at least two class names, got {self.labels!r}.")
        if not all(isinstance(label, str) and label for label in self.labels):
            raise ManifestError(f"{source}: every label must be a non-empty string, got {self.labels!r}.")
        if len(set(self.labels)) != len(self.labels):
            raise ManifestError(f"{source}: labels must be unique, got {self.labels!r}.")
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
        if len(spec.value_range) != 2 or not spec.value_range[0] < spec.value_range[1]:
            raise ManifestError(f"{source}: input.value_range must be [low, high], got {spec.value_range!r}.")
        for fmt, entry in self.models.items():
            if fmt not in MODEL_FORMATS:
                raise ManifestError(f"{source}: unknown model format {fmt!r}; known: {MODEL_FORMATS}.")
            if Path(entry.file).is_absolute() or ".." in Path(entry.file).parts:
                raise ManifestError(
                    f"{source}: models.{fmt}.file must be a path inside the bundle, got {entry.file!r}."
                )


def _known(cls, data: dict) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {key: value for key, value in data.items() if key in names}


def _require(data: dict, key: str, kind: type, source: str):
    if key not in data:
        raise ManifestError(f"{source}: required field '{key}' is missing. Re-export the bundle (python -m train ...).")
    if not isinstance(data[key], kind):
        raise ManifestError(f"{source}: field '{key}' must be a {kind.__name__}, got {type(data[key]).__name__}.")
    return data[key]


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
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(
            f"{path} is not valid JSON ({error}). Restore it from your training machine or re-export the bundle."
        ) from None
    return Manifest.from_dict(data, source=str(path))


def save_manifest(manifest: Manifest, bundle: os.PathLike) -> Path:
    """Validate, then write atomically (temp file + rename): a crash never leaves half a manifest."""
    manifest.validate()
    path = manifest_path(bundle)
    atomic_write_text(path, manifest.to_json())
    return path


def atomic_write_text(path: os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_labels(bundle: os.PathLike) -> list:
    path = Path(bundle) / LABELS_FILENAME
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sha256_file(path: os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
