"""convert_bundle(): SavedModel -> TFLite formats -> parity report -> manifest. The CLI is a thin layer over it.

    report = convert_bundle("artifacts/rps", calibration_dir="calibration_data/rps")
    report.passed        # False when a parity threshold is broken (the CLI exits 1)

Raises ConvertError (the CLI exits 2) for bad input, with the path and the fix in the message.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Callable

import numpy as np

from convert import calibration, device_side, tflite
from convert.errors import ConvertError
from convert.heldout import load_heldout
from convert.parity import ModelParity, ParityReport, Thresholds, compare, environment, write_report

DEFAULT_CALIBRATION = Path("calibration_data")
TFLITE_DIR = "tflite"
EDGETPU_DIR = "edgetpu"
SAVED_MODEL_BATCH = 64


def parse_formats(formats) -> list:
    """'float32,int8' or ['float32', 'int8'] -> ordered, de-duplicated list; ConvertError on unknown names."""
    names = formats.split(",") if isinstance(formats, str) else list(formats)
    names = [name.strip() for name in names if name.strip()]
    unknown = [name for name in names if name not in tflite.FORMATS]
    if unknown or not names:
        raise ConvertError(f"--formats: unknown or empty {unknown or names!r}; choose from "
                           f"{','.join(tflite.FORMATS)} (comma-separated).")
    return [fmt for fmt in tflite.FORMATS if fmt in names]


def convert_bundle(bundle_dir, formats: Iterable[str] | str = tflite.FORMATS,
                   calibration_dir=DEFAULT_CALIBRATION, calibration_samples: int = calibration.DEFAULT_SAMPLES,
                   io_type: str = "int8", test_data=None, edgetpu: bool = False,
                   thresholds: Thresholds | None = None, skip_parity: bool = False,
                   debug_quantization: bool = False, threads: int | None = None, progress: bool = True,
                   log: Callable[[str], None] = print, target_runtime: str = tflite.LATEST) -> ParityReport:
    from device.manifest import ManifestError, load_manifest

    bundle = Path(bundle_dir)
    formats = parse_formats(formats)
    tflite.target_limits(target_runtime)  # a bad --target-runtime fails before anything slow
    threads = threads or os.cpu_count() or 1  # as the device daemon (python -m device --threads)
    thresholds = thresholds or Thresholds()
    try:
        manifest = load_manifest(bundle)
    except ManifestError as error:
        raise ConvertError(str(error)) from None
    spec = manifest.input
    started = time.monotonic()
    # Check every input before the slow part: held-out list, calibration images, then the SavedModel.
    heldout = None if skip_parity else load_heldout(bundle, manifest, Path(test_data) if test_data else None)
    calibration_images = None
    if "int8" in formats:
        calibration_images = calibration.load_calibration_images(
            calibration_dir, spec, calibration_samples, progress=progress)
        log(f"calibration: {len(calibration_images)} images from {calibration_dir}")
    serving = tflite.ServingFunction(bundle / manifest.saved_model, spec.height, spec.width, spec.channels)

    out_dir = bundle / TFLITE_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for fmt in formats:
        t0 = time.monotonic()
        dataset = (calibration.representative_dataset(calibration_images, progress=progress)
                   if fmt == "int8" else None)
        content = tflite.convert(serving, fmt, dataset, io_type, target_runtime)
        _check_target_runtime(content, fmt, target_runtime)
        path = out_dir / tflite.model_filename(fmt)
        _atomic_write_bytes(path, content)
        files[fmt] = path
        log(f"converted {fmt:8s} -> {path} ({len(content) / 1024:.1f} KiB, {time.monotonic() - t0:.1f} s)")
    conversion_seconds = time.monotonic() - started

    edgetpu_info = {}
    if "int8" in files:
        edgetpu_info = _edgetpu_steps(bundle, files, compile_model=edgetpu, log=log)
    if "int8_edgetpu" in edgetpu_info.get("files", {}):
        files["int8_edgetpu"] = bundle / edgetpu_info["files"]["int8_edgetpu"]
    elif "int8" in files:
        _remove_stale_edgetpu_model(bundle, manifest, log)
    # Record the files first: the device loader finds them through the manifest and checks their sha256.
    _record_in_manifest(bundle, manifest, files)

    report = ParityReport(bundle=manifest.name, heldout_source="", images=0, saved_model_accuracy=None,
                          saved_model_latency_ms=None, thresholds=thresholds,
                          conversion_seconds=round(conversion_seconds, 2), edgetpu=edgetpu_info,
                          environment=environment(threads))
    measurable = {fmt: path for fmt, path in files.items() if fmt != "int8_edgetpu"}
    if skip_parity:
        report.notes.append("--skip-parity: nothing measured; parity.json/parity.md not written.")
        report.models = [ModelParity(fmt, _relative(path, bundle), path.stat().st_size, note="not measured")
                         for fmt, path in measurable.items()]
    else:
        images = _measure(report, heldout, manifest, serving, measurable, bundle, threads, progress, log)
        int8 = report.row("int8")
        if int8 is not None and (debug_quantization or not int8.passed):
            debug_images = images[:: max(1, len(images) // 64)]  # about 64 held-out images, spread evenly
            report.quantization_debug = _debug_quantization(bundle, serving, calibration_images, debug_images, log)
    if "int8_edgetpu" in files:
        path = files["int8_edgetpu"]
        report.models.append(ModelParity("int8_edgetpu", _relative(path, bundle), path.stat().st_size,
                                         note="needs an Edge TPU to measure"))
    _record_measurements(bundle, manifest, report)
    if not skip_parity:
        _caveats(report, len(manifest.labels))
        write_report(report, bundle)
    return report


def _measure(report, heldout, manifest, serving, files, bundle, threads, progress, log) -> np.ndarray:
    """Fill the report's rows; return the held-out images as the SavedModel saw them."""
    t0 = time.monotonic()
    frames = _decode(heldout.paths, progress)
    images = np.stack([device_side.prepare(frame, manifest.input) for frame in frames])
    labels = np.asarray(heldout.labels)
    reference = np.concatenate([serving(images[i:i + SAVED_MODEL_BATCH])
                                for i in range(0, len(images), SAVED_MODEL_BATCH)])
    report.heldout_source, report.images = heldout.source, len(images)
    report.saved_model_accuracy = float(np.mean(reference.argmax(axis=1) == labels))
    report.saved_model_latency_ms = _saved_model_latency(serving, images)
    for fmt, path in files.items():
        model = device_side.DeviceModel(fmt, bundle, threads=threads, manifest=manifest)
        meter = calibration.Progress(f"parity {fmt}", len(frames), enabled=progress)
        probabilities = []
        for frame in frames:
            probabilities.append(model.predict(frame))
            meter.step()
        meter.done()
        row = compare(fmt, _relative(path, bundle), path.stat().st_size, np.stack(probabilities), reference,
                      labels, model.latencies_ms, report.thresholds)
        report.models.append(row)
        log(f"parity {fmt}: agreement {row.agreement:.2%}, accuracy {row.accuracy:.2%}"
            + ("" if row.passed else f" -- FAIL: {'; '.join(row.failures)}"))
    report.evaluation_seconds = round(time.monotonic() - t0, 2)
    return images


def _decode(paths, progress) -> list:
    meter = calibration.Progress("held-out images", len(paths), enabled=progress)
    frames = []
    for path, frame in device_side.iter_images(paths):
        if frame is None:
            raise ConvertError(f"Held-out image {path} cannot be decoded. Regenerate the data or remove it "
                               "from heldout.txt / --test-data.")
        frames.append(frame)
        meter.step()
    meter.done()
    return frames


def _saved_model_latency(serving, images, calls: int = 20) -> float:
    timings = []
    for image in images[: calls + 1]:
        t0 = time.perf_counter()
        serving(image[np.newaxis])
        timings.append((time.perf_counter() - t0) * 1000)
    return float(np.median(timings[1:] or timings))  # the first call traces the function


def _caveats(report: ParityReport, classes: int) -> None:
    """Notes that say when the measured figures cannot carry much weight."""
    chance = 1 / classes
    if report.saved_model_accuracy is not None and report.saved_model_accuracy < chance + 0.1:
        report.notes.append(
            f"The SavedModel itself is near chance ({report.saved_model_accuracy:.1%}, chance {chance:.1%}): its "
            "class probabilities are close to each other, so any rounding can flip the top-1 class and agreement "
            "measures ties, not the converter. Train longer or on more data first."
        )
    if report.images and report.images < 200:
        step = 100 / report.images
        report.notes.append(
            f"{report.images} held-out images: one image is {step:.2f} accuracy points and {step:.2f}% agreement, "
            "so thresholds finer than that fail on a single image. Use more held-out images for a finer gate."
        )


def _debug_quantization(bundle, serving, calibration_images, debug_images, log):
    from convert.quant_debug import write_quantization_debug

    path = write_quantization_debug(serving, calibration_images, debug_images, bundle, log=log)
    return _relative(path, bundle)


def _edgetpu_steps(bundle: Path, files: dict, compile_model: bool, log) -> dict:
    from convert.edgetpu import compile_for_edgetpu
    from convert.readiness import check_model

    out = bundle / EDGETPU_DIR
    out.mkdir(exist_ok=True)
    readiness = check_model(files["int8"])
    readiness.model = _relative(files["int8"], bundle)
    readiness.write(out / "readiness")
    info = {"readiness": readiness.to_dict(), "summary": [readiness.summary()], "files": {}}
    log(f"edge tpu readiness: {readiness.summary()} ({_relative(out / 'readiness.md', bundle)})")
    if compile_model:
        result = compile_for_edgetpu(files["int8"], bundle / TFLITE_DIR, out)
        for name in ("model", "log", "operation_log"):
            if getattr(result, name):
                setattr(result, name, _relative(Path(getattr(result, name)), bundle))
        info["compile"] = result.to_dict()
        info["summary"].append(result.summary())
        if result.model is not None:
            info["files"]["int8_edgetpu"] = result.model
        log(f"edge tpu compiler: {result.summary()}")
    return info


def _remove_stale_edgetpu_model(bundle: Path, manifest, log) -> None:
    """A new int8 model makes an Edge TPU model compiled from the previous one wrong: remove it."""
    stale = bundle / TFLITE_DIR / f"{Path(tflite.model_filename('int8')).stem}_edgetpu.tflite"
    if stale.is_file():
        stale.unlink()
        log(f"removed {stale}: it was compiled from the previous int8 model (use --edgetpu to compile the new one)")
    manifest.models.pop("int8_edgetpu", None)


def _check_target_runtime(content: bytes, fmt: str, target_runtime: str) -> None:
    """--target-runtime: refuse (before writing anything) a model that runtime could not load."""
    from convert.readiness import op_versions
    from device.opversions import TARGET_RUNTIMES, unsupported

    if target_runtime == tflite.LATEST:
        return
    problems = unsupported(op_versions(content), *TARGET_RUNTIMES[target_runtime])
    if problems:
        needs = "; ".join(f"{op} version {needed} (it runs up to {highest})" for op, needed, highest in problems)
        raise ConvertError(f"The {fmt} model needs op versions {target_runtime} does not have: {needs}. No "
                           f"converter setting edgecam knows avoids them: drop {fmt} from --formats for this "
                           "runtime, or upgrade the device's runtime and convert with --target-runtime latest.")


def _record_in_manifest(bundle: Path, manifest, files: dict) -> None:
    """A ModelFile per converted file (hash, size, I/O quantization, ops and the lowest runtimes that run
    them); measurements come later."""
    from convert.readiness import io_quantization, op_versions
    from device.manifest import ModelFile, save_manifest, sha256_file
    from device.opversions import lowest_runtimes

    for fmt in list(manifest.models):  # forget models whose file is gone
        if not (bundle / manifest.models[fmt].file).is_file():
            del manifest.models[fmt]
    for fmt, path in files.items():
        ops = op_versions(path)
        manifest.models[fmt] = ModelFile(format=fmt, file=_relative(path, bundle), sha256=sha256_file(path),
                                         size_bytes=path.stat().st_size, **io_quantization(path), ops=ops,
                                         min_runtimes=lowest_runtimes(ops))
    save_manifest(manifest, bundle)


def _record_measurements(bundle: Path, manifest, report: ParityReport) -> None:
    from device.manifest import save_manifest

    for row in report.models:
        entry = manifest.models.get(row.format)
        if entry is None or row.accuracy is None:
            continue
        entry.accuracy = round(row.accuracy, 6)
        entry.agreement = round(row.agreement, 6)
        entry.latency_ms = None if row.latency_ms is None else round(row.latency_ms, 3)
    save_manifest(manifest, bundle)


def _relative(path: Path, bundle: Path) -> str:
    return Path(path).relative_to(bundle).as_posix()


def _atomic_write_bytes(path: Path, content: bytes) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


__all__ = ["ConvertError", "ParityReport", "Thresholds", "convert_bundle", "parse_formats"]
