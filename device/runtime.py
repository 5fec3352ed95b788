"""The one place in device/ that imports a TFLite interpreter and the Edge TPU delegate.

``load_model("int8", bundle)`` reads the bundle's manifest, checks the model file's sha256 against it,
picks a runtime (ai-edge-litert, else tflite-runtime; TensorFlow's interpreter only when
``EDGECAM_RUNTIME=tensorflow`` names it, never as a silent fallback; ``EDGECAM_RUNTIME`` forces one), loads the Edge TPU delegate for ``_edgetpu`` models and returns a
:class:`LoadedModel` holding the interpreter and everything the pipeline needs to feed and read it.

Model specs: ``int8`` (default), ``float32``, ``float16``, ``dynamic``, ``edgetpu`` (= ``int8_edgetpu``),
or a path to a ``.tflite`` file, each with an optional Edge TPU device suffix: ``edgetpu@usb:0``,
``tflite/model_int8_edgetpu.tflite@pci:0``.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.layout import IMX500_FORMAT, MANIFEST
from device.manifest import MODEL_FORMATS, Manifest, ModelFile, load_manifest
from device.opversions import explain_opcode_error, refusal, runtime_version, unsupported

RUNTIMES = ("ai_edge_litert", "tflite_runtime", "tensorflow")  # every name EDGECAM_RUNTIME accepts
DEVICE_RUNTIMES = ("ai_edge_litert", "tflite_runtime")  # tried in this order when none is forced
RUNTIME_ENV = "EDGECAM_RUNTIME"
EDGETPU_LIBRARY = "libedgetpu.so.1"
FORMAT_ALIASES = {"edgetpu": "int8_edgetpu"}


class ModelError(ValueError):
    """The model cannot be used: missing, corrupt, wrong hash or shape, no runtime, no Edge TPU.
    The message names the file and says how to fix it."""


class OpVersionError(ModelError):
    """The model needs op versions the runtime does not have (device/opversions.py): the message names the
    op, both versions and the fix (re-convert with --target-runtime, or upgrade the runtime)."""


@dataclass
class ModelSpec:
    format: str | None  # a manifest format, or None for a plain path
    path: str | None  # the path as given, when not a format name
    device: str | None  # Edge TPU device ("usb:0", "pci:0", "usb", ...), None for the first one

    @property
    def edgetpu(self) -> bool:
        name = self.format or Path(self.path or "").stem
        return name.endswith("edgetpu")


@dataclass
class LoadedModel:
    interpreter: Any
    runtime: str
    format: str
    path: Path
    sha256: str
    input_index: int
    output_index: int
    input_shape: tuple
    input_dtype: Any  # numpy dtype
    output_dtype: Any
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    threads: int | None
    verified: bool  # the sha256 matched the manifest's
    delegates: list = field(default_factory=list)
    embedding_index: int | None = None  # tensor index of the embedding output (None: the model has none)
    embedding_scale: float = 0.0
    embedding_zero_point: int = 0

    @property
    def height(self) -> int:
        return int(self.input_shape[1])

    @property
    def width(self) -> int:
        return int(self.input_shape[2])

    def run(self, batch):
        """set_tensor / invoke / get_tensor: the whole cost of the interpreter, nothing else."""
        interpreter = self.interpreter
        interpreter.set_tensor(self.input_index, batch)
        interpreter.invoke()
        return interpreter.get_tensor(self.output_index)

    def run_both(self, batch) -> tuple:
        """One invoke -> (raw probabilities, raw embedding); the embedding is None when the model has none."""
        interpreter = self.interpreter
        interpreter.set_tensor(self.input_index, batch)
        interpreter.invoke()
        embedding = None if self.embedding_index is None else interpreter.get_tensor(self.embedding_index)
        return interpreter.get_tensor(self.output_index), embedding

    def describe(self) -> dict:
        return {"format": self.format, "file": str(self.path), "sha256": self.sha256, "runtime": self.runtime,
                "threads": self.threads, "verified": self.verified}


# ---- parsing the --model value ------------------------------------------------------------
def parse_model_spec(spec: str) -> ModelSpec:
    """``int8`` | ``float32`` | ``edgetpu`` | ``path/to/model.tflite``, each optionally ``@usb:0``/``@pci:0``."""
    text = str(spec).strip()
    if not text:
        raise ModelError("--model is empty: use int8, float32, float16, dynamic, edgetpu or a .tflite path.")
    device = None
    if "@" in text:
        text, device = text.rsplit("@", 1)
        if not (device in ("usb", "pci") or device.startswith(("usb:", "pci:"))):
            raise ModelError(
                f"--model {spec}: Edge TPU device {device!r} is not usb, usb:N, pci or pci:N "
                "(e.g. --model edgetpu@usb:0)."
            )
    name = FORMAT_ALIASES.get(text, text)
    if name in MODEL_FORMATS or name == IMX500_FORMAT:  # imx500: the network runs on the sensor (device/imx500.py)
        parsed = ModelSpec(format=name, path=None, device=device)
    elif text.endswith(".tflite") or os.sep in text or "/" in text:
        parsed = ModelSpec(format=None, path=text, device=device)
    else:
        raise ModelError(
            f"--model {spec}: not a model format ({', '.join(('edgetpu',) + MODEL_FORMATS + (IMX500_FORMAT,))}) "
            "nor a .tflite path."
        )
    if device and not parsed.edgetpu:
        raise ModelError(f"--model {spec}: a device suffix (@{device}) only applies to _edgetpu models.")
    return parsed


def resolve_model(spec: ModelSpec, bundle: os.PathLike | None, manifest: Manifest | None):
    """-> (format name, absolute path, manifest entry or None)."""
    if spec.format is not None:
        if manifest is None or bundle is None:
            raise ModelError(f"--model {spec.format} needs --bundle (the folder with manifest.json).")
        entry = manifest.models.get(spec.format)
        if entry is None:
            have = ", ".join(sorted(manifest.models)) or "none"
            raise ModelError(
                f"{Path(bundle) / MANIFEST} lists no {spec.format} model (it has: {have}). "
                f"Convert the bundle first: python -m convert {bundle}, or pick one of those with --model."
            )
        return spec.format, (Path(bundle) / entry.file).resolve(), entry
    path = Path(spec.path)
    if not path.is_absolute() and not path.exists() and bundle is not None:
        path = Path(bundle) / path
    path = path.resolve()
    entry = None
    if manifest is not None and bundle is not None:
        for candidate in manifest.models.values():
            if (Path(bundle) / candidate.file).resolve() == path:
                entry = candidate
    fmt = entry.format if entry is not None else path.stem.replace("model_", "")
    return fmt, path, entry


# ---- choosing the interpreter -------------------------------------------------------------
def import_runtime(preferred: str | None = None):
    """-> (runtime name, Interpreter class, load_delegate function). ``preferred`` or $EDGECAM_RUNTIME forces
    one; otherwise the first of ai_edge_litert, tflite_runtime that imports. TensorFlow is used only when
    forced by name: a device that quietly loaded it would need ten times the memory the README promises."""
    forced = preferred or os.environ.get(RUNTIME_ENV) or None
    if forced is not None and forced not in RUNTIMES:
        raise ModelError(f"{RUNTIME_ENV}={forced!r} is not one of {', '.join(RUNTIMES)}.")
    errors = []
    for name in ([forced] if forced else DEVICE_RUNTIMES):
        try:
            if name == "tensorflow":
                module = importlib.import_module("tensorflow")
                return name, module.lite.Interpreter, module.lite.experimental.load_delegate
            module = importlib.import_module(f"{name}.interpreter")
            return name, module.Interpreter, module.load_delegate
        except ImportError as error:
            errors.append(f"{name}: {error}")
    if forced:
        raise ModelError(f"{RUNTIME_ENV}={forced} but it cannot be imported ({errors[0]}). "
                         f"Install it (pip install {forced.replace('_', '-')}) or unset {RUNTIME_ENV}.")
    raise ModelError(
        "No TFLite interpreter is installed (" + "; ".join(errors) + "). Install one: "
        "pip install ai-edge-litert (or tflite-runtime with 'numpy<2' on Raspberry Pi OS). TensorFlow's "
        f"interpreter is used only when named: {RUNTIME_ENV}=tensorflow (a host-only fallback)."
    )


def edgetpu_delegate(load_delegate, device: str | None):
    options = {"device": device} if device else {}
    try:
        return load_delegate(EDGETPU_LIBRARY, options)
    except (ValueError, OSError, RuntimeError) as error:
        where = f" at {device}" if device else ""
        raise ModelError(
            f"No Edge TPU found{where}: plug one in or use --model int8 "
            f"(loading {EDGETPU_LIBRARY} failed: {error}; on a Coral install libedgetpu1-std)."
        ) from None


# ---- loading --------------------------------------------------------------------------------
def read_regular(path: Path) -> bytes:
    """The bytes of PATH, a regular file; opened without blocking, so a FIFO or a device is refused at once
    (reading a FIFO would wait for a writer, deaf to SIGTERM)."""
    handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(handle, "rb") as stream:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise ModelError(f"Model file {path} is not a regular file (a FIFO, a device or a socket): put the "
                             "converted .tflite file there, e.g. copy the bundle again.")
        return stream.read()


def read_verified(path: Path, entry: ModelFile | None, bundle) -> tuple:
    """-> (model bytes, sha256, verified). The hash is taken over the very bytes the interpreter loads, so
    a file replaced on disk later can neither fool the check nor change the running model."""
    try:
        content = read_regular(path)
    except FileNotFoundError:
        raise ModelError(f"Model file {path} does not exist. Convert the bundle: python -m convert {bundle or ''}"
                         ) from None
    except OSError as error:
        raise ModelError(f"Model file {path} cannot be read ({error.strerror}). Check its permissions.") from None
    digest = hashlib.sha256(content).hexdigest()
    if entry is None:
        return content, digest, False
    if entry.sha256 and entry.sha256 != digest:
        raise ModelError(
            f"{path} does not match its sha256 in {Path(bundle) / MANIFEST} "
            f"(expected {entry.sha256[:12]}..., got {digest[:12]}...): the copy is corrupt or stale. "
            "Copy the bundle again or re-run python -m convert on it."
        )
    return content, digest, bool(entry.sha256)


def load_model(spec, bundle: os.PathLike | None = None, threads: int | None = None,
               manifest: Manifest | None = None, runtime: str | None = None) -> LoadedModel:
    """Validate the manifest and the model's sha256, then build the interpreter. Raise ModelError or
    ManifestError (both ValueError) with a message naming the file and the fix."""
    parsed = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec)
    if manifest is None and bundle is not None:
        manifest = load_manifest(bundle)
    if parsed.format == IMX500_FORMAT:
        from device.imx500 import load_sensor_model

        if bundle is None:
            raise ModelError("--model imx500 needs --bundle (the folder with manifest.json).")
        try:
            return load_sensor_model(bundle, manifest)
        except ValueError as error:
            raise ModelError(str(error)) from None
    fmt, path, entry = resolve_model(parsed, bundle, manifest)
    content, digest, verified = read_verified(path, entry, bundle)
    name, interpreter_class, load_delegate = import_runtime(runtime)
    version = runtime_version(name)
    problems = unsupported(entry.ops, name, version) if entry is not None and entry.ops else []
    if problems:  # the manifest says which op versions the model needs: refuse before the interpreter does
        raise OpVersionError(refusal(path, name, version, problems, bundle))
    delegates = [edgetpu_delegate(load_delegate, parsed.device)] if parsed.edgetpu else []
    try:
        interpreter = interpreter_class(model_content=content, num_threads=threads,
                                        experimental_delegates=delegates or None)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        explained = explain_opcode_error(str(error), path, name, version, bundle)
        if explained:  # a model without recorded ops (older convert/) that still needs a newer runtime
            raise OpVersionError(explained) from None
        raise ModelError(
            f"{path} cannot be loaded by {name} ({error}). Re-run python -m convert on the bundle, "
            "or update the runtime on the device."
        ) from None
    model = _describe_interpreter(interpreter, name, fmt, path, digest, threads, verified, delegates, entry,
                                  manifest)
    if manifest is not None:
        check_against_manifest(model, manifest, bundle)
    return model


def _describe_interpreter(interpreter, name, fmt, path, digest, threads, verified, delegates, entry=None,
                          manifest=None) -> LoadedModel:
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) not in (1, 2):
        raise ModelError(f"{path} has {len(inputs)} inputs and {len(outputs)} outputs; edgecam needs one input "
                         "and one output (probabilities) or two (probabilities and embedding).")
    source = inputs[0]
    probabilities, embedding = _pick_outputs(outputs, entry, manifest, path)
    target = outputs[probabilities]
    in_scale, in_zero = source.get("quantization", (0.0, 0))
    out_scale, out_zero = target.get("quantization", (0.0, 0))
    extra = {}
    if embedding is not None:
        scale, zero = outputs[embedding].get("quantization", (0.0, 0))
        extra = dict(embedding_index=outputs[embedding]["index"], embedding_scale=float(scale),
                     embedding_zero_point=int(zero))
    return LoadedModel(**extra, 
        interpreter=interpreter, runtime=name, format=fmt, path=path, sha256=digest,
        input_index=source["index"], output_index=target["index"], input_shape=tuple(source["shape"]),
        input_dtype=source["dtype"], output_dtype=target["dtype"],
        input_scale=float(in_scale), input_zero_point=int(in_zero),
        output_scale=float(out_scale), output_zero_point=int(out_zero),
        threads=threads, verified=verified, delegates=delegates,
    )


def _pick_outputs(outputs: list, entry: ModelFile | None, manifest: Manifest | None, path) -> tuple:
    """-> (position of the probabilities output, position of the embedding output or None). The manifest's
    entry says which is which; a model outside the manifest is told apart by its width (the label count)."""
    if len(outputs) == 1:
        return 0, None
    if entry is not None and entry.embedding_index in (0, 1) and entry.output_index in (0, 1) \
            and entry.embedding_index != entry.output_index:
        return entry.output_index, entry.embedding_index
    classes = len(manifest.labels) if manifest is not None else None
    widths = [int(output["shape"][-1]) for output in outputs]
    if classes is not None and widths.count(classes) == 1:
        probabilities = widths.index(classes)
        return probabilities, 1 - probabilities
    raise ModelError(f"{path} has two outputs and the manifest does not say which one gives the probabilities. "
                     "Re-run python -m convert on the bundle.")


def check_against_manifest(model: LoadedModel, manifest: Manifest, bundle) -> None:
    spec = manifest.input
    expected = (1, spec.height, spec.width, spec.channels)
    if tuple(int(v) for v in model.input_shape) != expected:
        raise ModelError(
            f"{model.path} takes input {tuple(model.input_shape)} but {Path(bundle) / MANIFEST} says "
            f"{expected}: the model and manifest come from different exports. Re-run python -m convert {bundle}."
        )
    classes = next(int(output["shape"][-1]) for output in model.interpreter.get_output_details()
                   if output["index"] == model.output_index)
    if classes != len(manifest.labels):
        raise ModelError(
            f"{model.path} outputs {classes} classes but {Path(bundle) / MANIFEST} lists "
            f"{len(manifest.labels)} labels. Re-run python -m convert {bundle}."
        )
