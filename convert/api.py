"""convert_bundle(): SavedModel -> TFLite formats -> parity report -> manifest. The CLI is a thin layer over it.

    report = convert_bundle("artifacts/rps", calibration_dir="calibration_data/rps")
    report.passed        # False when a parity threshold is broken (the CLI exits 1)
    report.failed_try    # then: where the failed output was kept (artifacts/rps.failed-...)

Every input is checked before the slow part. The new files are written into a staging copy of the bundle
(device/layout.py's Stage) and swapped in only when parity holds (or was skipped, which the manifest and
parity.md then say): a failed try leaves the bundle exactly as it was and is kept beside it.

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
from device import drift, layout
from device.atomic import atomic_write
from device.layout import EDGETPU_DIR, EDGETPU_FORMAT, TFLITE_DIR

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
                   calibration_dir=None, calibration_samples: int = calibration.DEFAULT_SAMPLES,
                   io_type: str = "int8", test_data=None, edgetpu: bool = False,
                   thresholds: Thresholds | None = None, skip_parity: bool = False, imx500: bool = False,
                   debug_quantization: bool = False, threads: int | None = None, progress: bool = True,
                   log: Callable[[str], None] = print, target_runtime: str = tflite.LATEST) -> ParityReport:
    """CALIBRATION_DIR None: a sample of the bundle's own training images (the manifest's dataset.root and
    train_folder), never another folder found by chance. Raises ConvertError for bad input before anything is
    written."""
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
    # Check every input before the slow part: where we write, the held-out images (decoded), the calibration
    # images, then the SavedModel.
    _check_writable(bundle)
    if imx500:  # the AI Camera's toolchain and architecture: refused before anything slow (convert/imx500.py)
        from convert import imx500 as imx500_target

        imx500_target.check_architecture(manifest)
        imx500_target.toolchain_python()
    heldout = None if skip_parity else load_heldout(bundle, manifest, Path(test_data) if test_data else None)
    frames = None if skip_parity else _decode(heldout.paths, progress)
    calibration_images, calibration_source = None, ""
    if "int8" in formats or imx500:
        calibration_images, calibration_source = _calibration_images(
            bundle, manifest, calibration_dir, calibration_samples, progress, log)
        manifest.calibration = calibration_source
    serving = tflite.ServingFunction(bundle / manifest.saved_model, spec.height, spec.width, spec.channels)

    stage = layout.Stage(bundle)
    staging = stage.open()
    try:
        files, edgetpu_info = _convert_models(staging, manifest, serving, formats, calibration_images, io_type,
                                              edgetpu, progress, log, target_runtime)
        report = ParityReport(bundle=manifest.name, heldout_source="", images=0, saved_model_accuracy=None,
                              saved_model_latency_ms=None, thresholds=thresholds,
                              conversion_seconds=round(time.monotonic() - started, 2), edgetpu=edgetpu_info,
                              environment=environment(threads))
        report.calibration = calibration_source
        _parity(report, staging, manifest, serving, files, heldout, frames, calibration_images, skip_parity,
                debug_quantization, threads, progress, log)
        if imx500:
            imx500_target.add_to_bundle(report, staging, manifest, serving, heldout, frames, calibration_images,
                                        skip_parity, log)
    except BaseException:
        stage.fail()
        raise
    if report.passed:
        stage.commit()
    else:
        report.failed_try = str(stage.fail())
    return report


def _check_writable(bundle: Path) -> None:
    """The new version is written beside the bundle and swapped in: both folders must take new files."""
    for folder in (bundle.parent, bundle):
        problem = layout.writable_problem(folder)
        if problem:
            raise ConvertError(
                f"Cannot write to {folder} ({problem}): convert writes the new models beside the bundle and swaps "
                f"them in when parity holds. Make {folder} writable (or copy the bundle to a writable place) and "
                "run again; nothing was changed."
            )


def _calibration_images(bundle: Path, manifest, calibration_dir, samples: int, progress: bool, log):
    """-> (float32 images, what they are). --calibration DIR: that folder (an error if it is unusable: a typo
    must not quietly calibrate on something else); none: a sample of the bundle's own training images, so a
    bundle trained on the user's folder calibrates on that folder (a calibration_data/ in the current folder,
    the built-in data's, is never picked up by chance)."""
    if calibration_dir is not None:
        images = calibration.load_calibration_images(calibration_dir, manifest.input, samples, progress=progress)
        source = f"{len(images)} images from {calibration_dir}"
    else:
        calibration.check_samples(samples)
        folder, paths = calibration.training_images(bundle, manifest)
        images = calibration.prepare_images(paths, manifest.input, samples, str(folder),
                                            "Pass --calibration DIR with representative images.", progress=progress)
        source = (f"{calibration.TRAINING_IMAGES_NOTE} ({len(images)} of {len(paths)} in {folder}, held-out "
                  "images excluded): no --calibration folder was given")
    log(f"calibration: {source}")
    return images, source


def _convert_models(staging: Path, manifest, serving, formats, calibration_images, io_type, edgetpu, progress,
                    log, target_runtime: str) -> tuple:
    """Write every format into STAGING/tflite, run the Edge TPU steps, record the files in the manifest."""
    out_dir = staging / TFLITE_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    with tempfile.TemporaryDirectory(prefix="edgecam-embedding-") as scratch:
        source, head = _with_embedding(staging, manifest, serving, Path(scratch), log)
        for fmt in formats:
            t0 = time.monotonic()
            dataset = (calibration.representative_dataset(calibration_images, progress=progress)
                       if fmt == "int8" else None)
            content = tflite.convert(source, fmt, dataset, io_type, target_runtime)
            _check_target_runtime(content, fmt, target_runtime)
            path = out_dir / tflite.model_filename(fmt)
            atomic_write(path, content)
            files[fmt] = path
            log(f"converted {fmt:8s} -> {layout.model_path(fmt)} ({len(content) / 1024:.1f} KiB, "
                f"{time.monotonic() - t0:.1f} s)")
    _record_embedding(staging, manifest, head, log)
    edgetpu_info = {}
    if "int8" in files:
        edgetpu_info = _edgetpu_steps(staging, files, compile_model=edgetpu, log=log)
    if EDGETPU_FORMAT in edgetpu_info.get("files", {}):
        files[EDGETPU_FORMAT] = staging / edgetpu_info["files"][EDGETPU_FORMAT]
    elif "int8" in files:
        _remove_stale_edgetpu_model(staging, manifest, log)
    # Record the files first: the device loader finds them through the manifest and checks their sha256.
    _record_in_manifest(staging, manifest, files)
    return files, edgetpu_info


def _parity(report: ParityReport, staging: Path, manifest, serving, files: dict, heldout, frames,
            calibration_images, skip_parity: bool, debug_quantization: bool, threads, progress, log) -> None:
    """Measure (or mark as not measured), write the report and the manifest's parity status into STAGING."""
    from device.manifest import PARITY_FAILED, PARITY_PASSED, PARITY_SKIPPED

    measurable = {fmt: path for fmt, path in files.items() if fmt != EDGETPU_FORMAT}
    if skip_parity:
        report.notes.append("--skip-parity: nothing measured; parity.json/parity.md not written.")
        report.models = [ModelParity(fmt, _relative(path, staging), path.stat().st_size, note="not measured")
                         for fmt, path in measurable.items()]
    else:
        images = _measure(report, heldout, frames, manifest, serving, measurable, staging, threads, progress, log)
        int8 = report.row("int8")
        if int8 is not None and (debug_quantization or not int8.passed):
            debug_images = images[:: max(1, len(images) // 64)]  # about 64 held-out images, spread evenly
            report.quantization_debug = _debug_quantization(staging, serving, calibration_images, debug_images, log)
    if EDGETPU_FORMAT in files:
        path = files[EDGETPU_FORMAT]
        report.models.append(ModelParity(EDGETPU_FORMAT, _relative(path, staging), path.stat().st_size,
                                         note="needs an Edge TPU to measure"))
    manifest.parity = PARITY_SKIPPED if skip_parity else PARITY_PASSED if report.passed else PARITY_FAILED
    _record_measurements(staging, manifest, report)
    if skip_parity:
        _mark_parity_not_measured(staging, manifest)
    else:
        _caveats(report, len(manifest.labels))
        write_report(report, staging)


def _with_embedding(bundle: Path, manifest, serving, scratch: Path, log) -> tuple:
    """-> (what to convert, the head layer or None): the two-output SavedModel when model.keras ends in a
    Dense softmax layer, else the bundle's SavedModel as is (no embedding output)."""
    from convert.embedding import find_head, two_output_saved_model

    keras_path = bundle / manifest.keras_model
    head = find_head(keras_path) if keras_path.is_file() else None
    if head is None:
        log(f"embedding: none ({keras_path.name} is missing or does not end in a Dense softmax layer); the "
            "models convert without an embedding output and cannot be taught on the device")
        return serving, None
    spec = manifest.input
    folder = two_output_saved_model(head, scratch / "saved_model")
    log(f"embedding: the {head.size}-wide input of layer '{head.layer}' is a second output of every model")
    return tflite.ServingFunction(folder, spec.height, spec.width, spec.channels, embedding=True), head


def _record_embedding(bundle: Path, manifest, head, log) -> None:
    """Write the bundle's own head (tflite/head.npz) and describe it in the manifest (saved with the models)."""
    from convert.embedding import save_head
    from device.layout import HEAD_FILE
    from device.manifest import EmbeddingInfo, sha256_file

    path = bundle / HEAD_FILE
    path.unlink(missing_ok=True)  # a new file, never the old one rewritten: it is hard-linked with the live bundle
    if head is None:
        manifest.embedding = None
        return
    save_head(head, path)
    manifest.embedding = EmbeddingInfo(size=head.size, layer=head.layer, head_file=HEAD_FILE,
                                       head_sha256=sha256_file(path))
    log(f"head: {HEAD_FILE} ({head.weights.shape[0]}x{head.weights.shape[1]} weights, revision 0)")


def _mark_parity_not_measured(staging: Path, manifest) -> None:
    """--skip-parity: an earlier report describes models that are gone; replace it by one that says so."""
    from device.atomic import atomic_write

    for name in (layout.PARITY_JSON, layout.QUANT_DEBUG_CSV, layout.QUANT_DEBUG_MD):
        (staging / name).unlink(missing_ok=True)
    models = ", ".join(manifest.models) or "none"
    atomic_write(staging / layout.PARITY_MD, (
        f"# Accuracy parity: {manifest.name}\n\nNOT MEASURED: the models ({models}) were converted with "
        "--skip-parity, so nothing here vouches for their accuracy. Run python -m convert without --skip-parity "
        "to measure parity; deploy.bundle refuses this bundle until then unless --force is given.\n"))


def _measure(report, heldout, frames, manifest, serving, files, bundle, threads, progress, log) -> np.ndarray:
    """Fill the report's rows; return the held-out images as the SavedModel saw them."""
    t0 = time.monotonic()
    images = np.stack([device_side.prepare(frame, manifest.input) for frame in frames])
    labels = np.asarray(heldout.labels)
    reference = np.concatenate([serving(images[i:i + SAVED_MODEL_BATCH])
                                for i in range(0, len(images), SAVED_MODEL_BATCH)])
    report.heldout_source, report.images = heldout.source, len(images)
    references = {}
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
        if len(model.embeddings) == len(frames):
            references[fmt] = drift.make_reference(
                np.stack(model.embeddings), labels, np.stack(probabilities).max(axis=1),
                f"the bundle's {len(frames)} held-out images ({heldout.source}), {fmt} model")
        report.models.append(row)
        log(f"parity {fmt}: agreement {row.agreement:.2%} ({row.near_ties} near ties), accuracy {row.accuracy:.2%} "
            f"(drop {row.accuracy_drop:+.2f} points)"
            + ("" if row.passed else f" -- FAIL: {'; '.join(row.failures)}"))
    report.evaluation_seconds = round(time.monotonic() - t0, 2)
    _record_drift(bundle, manifest, references, log)
    return images


def _record_drift(bundle: Path, manifest, references: dict, log) -> None:
    """The bundle's own head's drift reference (device/drift.py), per format, beside the head; in the manifest
    (saved with the measurements)."""
    from device.manifest import sha256_file

    if not references or manifest.embedding is None:
        return
    path = bundle / drift.BUNDLE_REFERENCE_FILE
    atomic_write(path, drift.to_bytes(references))
    manifest.embedding.drift_file = drift.BUNDLE_REFERENCE_FILE
    manifest.embedding.drift_sha256 = sha256_file(path)
    log(f"drift: {drift.BUNDLE_REFERENCE_FILE} (reference of {', '.join(references)} on the held-out images)")


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
            info["files"][EDGETPU_FORMAT] = result.model
        log(f"edge tpu compiler: {result.summary()}")
    return info


def _remove_stale_edgetpu_model(bundle: Path, manifest, log) -> None:
    """A new int8 model makes an Edge TPU model compiled from the previous one wrong: remove it."""
    stale = bundle / layout.model_path(EDGETPU_FORMAT)
    if stale.is_file():
        stale.unlink()
        log(f"removed {stale}: it was compiled from the previous int8 model (use --edgetpu to compile the new one)")
    manifest.models.pop(EDGETPU_FORMAT, None)


def _check_target_runtime(content: bytes, fmt: str, target_runtime: str) -> None:
    """--target-runtime: refuse (before writing anything) a model that runtime could not load."""
    from convert.readiness import op_versions
    from device.opversions import TARGET_RUNTIMES, unknown_ops, unsupported

    if target_runtime == tflite.LATEST:
        return
    ops = op_versions(content)
    unknown = unknown_ops(ops, *TARGET_RUNTIMES[target_runtime])
    if unknown:
        raise ConvertError(f"The {fmt} model uses {', '.join(unknown)}, whose versions device/opversions.py has not "
                           f"measured for {target_runtime}, so nothing vouches that it runs there. Measure them "
                           "(make op-versions, then copy the printed table into device/opversions.py), or convert "
                           "with --target-runtime latest and try the model on the device.")
    problems = unsupported(ops, *TARGET_RUNTIMES[target_runtime])
    if problems:
        needs = "; ".join(f"{op} version {needed} (it runs up to {highest})" for op, needed, highest in problems)
        raise ConvertError(f"The {fmt} model needs op versions {target_runtime} does not have: {needs}. No "
                           f"converter setting edgecam knows avoids them: drop {fmt} from --formats for this "
                           "runtime, or upgrade the device's runtime and convert with --target-runtime latest.")


def _record_in_manifest(bundle: Path, manifest, files: dict) -> None:
    """A ModelFile per converted file (hash, size, I/O quantization, output layout, ops and the lowest runtimes
    that run them); measurements come later."""
    from convert.embedding import output_layout
    from convert.readiness import io_quantization, op_versions
    from device.manifest import ModelFile, save_manifest, sha256_file
    from device.opversions import lowest_runtimes

    for fmt in list(manifest.models):  # forget models whose file is gone
        if not (bundle / manifest.models[fmt].file).is_file():
            del manifest.models[fmt]
    for fmt, path in files.items():
        ops = op_versions(path)
        fields = dict(io_quantization(path), **output_layout(path, len(manifest.labels)))
        manifest.models[fmt] = ModelFile(format=fmt, file=_relative(path, bundle), sha256=sha256_file(path),
                                         size_bytes=path.stat().st_size, **fields, ops=ops,
                                         min_runtimes=lowest_runtimes(ops))
    save_manifest(manifest, bundle)


def _record_measurements(bundle: Path, manifest, report: ParityReport) -> None:
    from device.manifest import PARITY_FAILED, PARITY_PASSED, PARITY_SKIPPED, save_manifest

    for row in report.models:
        entry = manifest.models.get(row.format)
        if entry is None or row.format == EDGETPU_FORMAT:  # its parity needs an Edge TPU: left "" (device/tune.py)
            continue
        entry.parity = PARITY_SKIPPED if row.accuracy is None else PARITY_PASSED if row.passed else PARITY_FAILED
        if row.accuracy is None:
            continue
        entry.accuracy = round(row.accuracy, 6)
        entry.agreement = round(row.agreement, 6)
        entry.latency_ms = None if row.latency_ms is None else round(row.latency_ms, 3)
    save_manifest(manifest, bundle)


def _relative(path: Path, bundle: Path) -> str:
    return Path(path).relative_to(bundle).as_posix()


__all__ = ["ConvertError", "ParityReport", "Thresholds", "convert_bundle", "parse_formats"]
