"""``python -m convert BUNDLE --imx500``: the bundle's model for the Raspberry Pi AI Camera (Sony IMX500).

Sony's host toolchain (Model Compression Toolkit + imx500-converter) needs TensorFlow 2.15 / Keras 2, numpy<2 and
Java 17; this venv has TensorFlow 2.21 / Keras 3. So the toolchain lives in a venv of its own, outside the
repository (``make imx500-toolchain``, scripts/imx500_toolchain.sh), and convert/imx500_job.py runs there as a
subprocess. This side hands it the bundle as plain arrays and reads back what it made:

  architecture   from the manifest (reference, small, mobilenet_v2; others are refused by name)
  weights        every layer's weights from model.keras, as numpy arrays keyed "LAYER/INDEX"
  calibration    the calibration images, prepared by the device's own preprocessing
  held-out       the held-out images, prepared the same way, and the SavedModel's probabilities on them

and gets back packerOut.zip, the converter's memory report, the sensor's input/output quantisation
(dnnParams.xml) and the fake-quantised model's outputs on the held-out images (its parity row, and what the
test stand-in camera serves). Nothing of Sony's is vendored: the toolchain is installed from PyPI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.errors import ConvertError
from device.layout import IMX500_FORMAT

REPO = Path(__file__).resolve().parent.parent
TOOLCHAIN_SCRIPT = REPO / "scripts" / "imx500_toolchain.sh"
JOB = Path(__file__).resolve().parent / "imx500_job.py"
ARCHITECTURES = ("reference", "small", "mobilenet_v2")  # rebuilt for Keras 2 in convert/imx500_job.py
FORMAT = IMX500_FORMAT
JOB_TIMEOUT_S = 900


@dataclass
class Imx500Result:
    packer: Path  # packerOut.zip in the job folder
    memory_report: dict
    fit_in_chip: bool
    memory_usage_bytes: int
    memory_available_bytes: int
    probabilities: np.ndarray  # the fake-quantised model on the held-out images
    embedding: np.ndarray
    details: dict  # result.json of the job

    def memory_line(self) -> str:
        report = self.memory_report.get("Memory Report", {})
        return (f"memory {report.get('Memory Usage', '?')} of {report.get('Total Memory Available On Chip', '?')} "
                f"({report.get('Memory Utilization', '?')}), fit in chip: {str(self.fit_in_chip).lower()}")


def toolchain_python() -> Path:
    """The toolchain venv's python, or ConvertError naming the command that builds it."""
    done = subprocess.run(["bash", str(TOOLCHAIN_SCRIPT), "--check"], capture_output=True, text=True)
    if done.returncode != 0:
        raise ConvertError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else
                           "The IMX500 toolchain is missing: run make imx500-toolchain, then convert again.")
    return Path(done.stdout.strip().splitlines()[-1]) / "bin" / "python"


def check_architecture(manifest) -> None:
    name = manifest.architecture.name or "reference"
    if name not in ARCHITECTURES:
        raise ConvertError(f"--imx500: the {name} architecture is not rebuilt for the AI Camera's toolchain (it "
                           f"rebuilds {', '.join(ARCHITECTURES)}); train with --model small or mobilenet_v2, or "
                           "convert without --imx500.")


def export_weights(keras_path: Path, path: Path):
    """model.keras -> PATH (.npz: 'LAYER/INDEX' per weight of every leaf layer); returns its Dense softmax head
    (convert.embedding.HeadLayer), whose input is the embedding."""
    import keras

    from convert.embedding import find_head

    head = find_head(keras_path)
    if head is None:
        raise ConvertError(f"--imx500: {keras_path} does not end in a Dense softmax layer, so the AI Camera model "
                           "cannot give the embedding the device teaches on. Re-train the bundle with python -m train.")
    arrays = {}

    def walk(layer):
        if isinstance(layer, keras.Model):
            for inner in layer.layers:
                walk(inner)
            return
        for index, value in enumerate(layer.get_weights()):
            arrays[f"{layer.name}/{index}"] = np.asarray(value)

    walk(head.model)
    np.savez(path, **arrays)
    return head


def parse_size(text: str) -> int:
    """'176.97KB' / '8.00MB' (the converter's report; binary units) -> bytes."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMG]?B)\s*", str(text))
    if not match:
        return 0
    return int(round(float(match.group(1)) * {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3}[match.group(2)]))


def run_job(manifest, keras_path: Path, calibration_images: np.ndarray, heldout_images: np.ndarray,
            reference: np.ndarray, scratch: Path, log) -> Imx500Result:
    """Everything that runs in the toolchain venv; ConvertError when it cannot run or the converter refuses
    the model for another reason than memory (a model too large still comes back, fit_in_chip False)."""
    check_architecture(manifest)
    python = toolchain_python()
    job_dir = Path(scratch)
    head = export_weights(keras_path, job_dir / "weights.npz")
    np.save(job_dir / "calibration.npy", np.asarray(calibration_images, np.float32))
    np.save(job_dir / "heldout.npy", np.asarray(heldout_images, np.float32))
    np.savez(job_dir / "host_outputs.npz", probabilities=np.asarray(reference, np.float32))
    arch = manifest.architecture
    job = {"architecture": {"name": arch.name or "reference", "alpha": arch.alpha},
           "input_size": [manifest.input.height, manifest.input.width], "classes": len(manifest.labels),
           "head_layer": head.layer}
    (job_dir / "job.json").write_text(json.dumps(job))
    log(f"imx500: quantising and converting in {python.parent.parent} (MCT, imxconv-tf; 20-60 s)")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    started = time.monotonic()
    try:
        done = subprocess.run([str(python), str(JOB), str(job_dir)], capture_output=True, text=True, env=env,
                              timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ConvertError(f"--imx500: the toolchain job ran past {JOB_TIMEOUT_S} s; run again (or convert "
                           "without --imx500).") from None
    for line in done.stderr.splitlines():
        if line.startswith("imx500: "):
            log(line)
    result_path = job_dir / "result.json"
    if done.returncode != 0 or not result_path.is_file():
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        raise ConvertError(f"--imx500: the toolchain job failed (exit {done.returncode}):\n{tail}\nThe bundle is "
                           "unchanged; check make imx500-toolchain, then convert again.")
    details = json.loads(result_path.read_text())
    report = details.get("memory_report") or {}
    summary = report.get("Memory Report", {})
    if not details.get("packer_zip") and not summary:
        tail = "\n".join(details.get("converter_log", "").strip().splitlines()[-6:])
        raise ConvertError(f"--imx500: imxconv-tf refused the model (exit {details.get('converter_returncode')}):"
                           f"\n{tail}")
    outputs = np.load(job_dir / "outputs.npz")
    log(f"imx500: toolchain job done in {time.monotonic() - started:.1f} s")
    return Imx500Result(packer=Path(details["packer_zip"]) if details.get("packer_zip") else job_dir / "none",
                        memory_report=report, fit_in_chip=bool(summary.get("Fit In Chip", False)),
                        memory_usage_bytes=parse_size(summary.get("Memory Usage", "")),
                        memory_available_bytes=parse_size(summary.get("Total Memory Available On Chip", "")),
                        probabilities=outputs["probabilities"], embedding=outputs["embedding"], details=details)


def converter_version(details: dict) -> str:
    match = re.search(r"Running version ([0-9][0-9.]*)", details.get("converter_log", ""))
    return match.group(1) if match else ""


def output_positions(details: dict, classes: int) -> dict:
    """Which of the sensor's outputs is which, and their quantisation, from dnnParams.xml."""
    tensors = details.get("dnn_params") or []
    inputs = [t for t in tensors if t["kind"] == "input"]
    outputs = sorted((t for t in tensors if t["kind"] == "output"), key=lambda t: t["ordinal"])
    named = [i for i, t in enumerate(outputs) if "probabilities" in t["name"]]
    probabilities = named[0] if named else 0
    embedding = 1 - probabilities if len(outputs) == 2 else -1
    fields = {"output_index": probabilities, "embedding_index": embedding}
    if inputs:
        fields.update(input_scale=inputs[0]["scale"], input_signed=inputs[0]["signed"])
    if outputs:
        fields.update(output_scale=outputs[probabilities]["scale"], output_signed=outputs[probabilities]["signed"])
    if embedding >= 0:
        fields.update(embedding_scale=outputs[embedding]["scale"], embedding_signed=outputs[embedding]["signed"])
    return fields


def write_files(staging: Path, manifest, result: Imx500Result, heldout_names: list) -> None:
    """packerOut.zip, the memory report, dnnParams.xml and the fake-quantised outputs into STAGING/imx500/, and
    manifest.imx500 (saved by the caller)."""
    from device.layout import IMX500_DIR, IMX500_OUTPUTS, IMX500_PACKER
    from device.manifest import Imx500Info, sha256_file

    folder = staging / IMX500_DIR
    if folder.exists():
        shutil.rmtree(folder)  # new files, never the old ones rewritten (they are hard-linked with the live bundle)
    folder.mkdir()
    (folder / "memory_report.json").write_text(json.dumps(result.memory_report, indent=2) + "\n")
    job_dir = result.packer.parent.parent
    if (job_dir / "dnnParams.xml").is_file():
        shutil.copyfile(job_dir / "dnnParams.xml", folder / "dnnParams.xml")
    np.savez(staging / IMX500_OUTPUTS, probabilities=result.probabilities, embedding=result.embedding,
             images=np.asarray(heldout_names))
    packer = staging / IMX500_PACKER
    if result.packer.is_file():
        shutil.copyfile(result.packer, packer)
    details = result.details
    manifest.imx500 = Imx500Info(
        file=IMX500_PACKER, sha256=sha256_file(packer) if packer.is_file() else "",
        size_bytes=packer.stat().st_size if packer.is_file() else 0,
        converter_version=converter_version(details), mct_version=details.get("mct_version", ""),
        memory_usage_bytes=result.memory_usage_bytes, memory_available_bytes=result.memory_available_bytes,
        fit_in_chip=result.fit_in_chip, memory_report=f"{IMX500_DIR}/memory_report.json",
        normalisation=list(details.get("normalisation", [])), outputs_file=IMX500_OUTPUTS,
        **output_positions(details, len(manifest.labels)))


def snap(values: np.ndarray, scale: float, signed: bool) -> np.ndarray:
    """Values on the sensor's 8-bit output grid (what the device receives): round(v / scale) * scale, clipped."""
    if not scale:
        return np.asarray(values, np.float32)
    low, high = (-128, 127) if signed else (0, 255)
    return (np.clip(np.round(np.asarray(values) / scale), low, high) * scale).astype(np.float32)



def add_to_bundle(report, staging: Path, manifest, serving, heldout, frames, calibration_images, skip_parity: bool,
                  log) -> None:
    """convert --imx500's step after the TFLite formats: run the toolchain job, write STAGING/imx500/, add the
    imx500 row to REPORT (the same table and gate as every format) and record manifest.imx500."""
    import tempfile

    from convert import device_side
    from convert.parity import ModelParity, compare, write_report
    from device.manifest import PARITY_FAILED, PARITY_PASSED, PARITY_SKIPPED, save_manifest

    if frames is not None:
        images = np.stack([device_side.prepare(frame, manifest.input) for frame in frames])
        names = [Path(path).name for path in heldout.paths]
    else:  # --skip-parity: nothing is measured; the job still needs images to evaluate on
        images, names = np.asarray(calibration_images[:8]), []
    reference = np.concatenate([np.asarray(serving(images[i:i + 64])) for i in range(0, len(images), 64)])
    with tempfile.TemporaryDirectory(prefix="edgecam-imx500-") as scratch:
        result = run_job(manifest, staging / manifest.keras_model, calibration_images, images, reference,
                         Path(scratch), log)
        write_files(staging, manifest, result, names)
    info = manifest.imx500
    log(f"imx500: {result.memory_line()}; converter {info.converter_version}, MCT {info.mct_version}")
    report.notes.append(f"imx500 (the AI Camera): {result.memory_line()} (imx500/memory_report.json); "
                        f"imx500-converter {info.converter_version}, MCT {info.mct_version}; the row measures MCT's "
                        "fake-quantised model on the host, fed the held-out images on the sensor's input grid; its "
                        "outputs on the sensor's output grid. No bit-exact IMX500 emulator exists: a Pi shows the rest.")
    size = info.size_bytes
    shown = info.file if info.sha256 else info.memory_report  # a model refused for its size has no packerOut.zip
    if skip_parity:
        row = ModelParity(FORMAT, shown, size, note="not measured")
    else:
        probabilities = snap(result.probabilities, info.output_scale, info.output_signed)
        row = compare(FORMAT, shown, size, probabilities, reference, np.asarray(heldout.labels), [],
                      report.thresholds)
        log(f"parity imx500: agreement {row.agreement:.2%}, accuracy {row.accuracy:.2%} (drop "
            f"{row.accuracy_drop:+.2f} points)" + ("" if row.passed else f" -- FAIL: {'; '.join(row.failures)}"))
    if not result.fit_in_chip:
        report_summary = result.memory_report.get("Memory Report", {})
        row.failures.append(f"does not fit the chip: needs {report_summary.get('Memory Usage', '?')} of the "
                            f"{report_summary.get('Total Memory Available On Chip', '?')} available (imx500/"
                            "memory_report.json, \"Fit In Chip\": false); use a smaller model (--model small, or "
                            "mobilenet_v2 with a smaller --alpha or --image-size)")
        row.note = ""
        log(f"imx500: FAIL: {row.failures[-1]}")
    report.models.append(row)
    info.parity = PARITY_SKIPPED if skip_parity and result.fit_in_chip else PARITY_PASSED if row.passed \
        else PARITY_FAILED
    if row.accuracy is not None:
        info.accuracy, info.agreement = round(row.accuracy, 6), round(row.agreement, 6)
    if not skip_parity:
        manifest.parity = PARITY_PASSED if report.passed else PARITY_FAILED
        write_report(report, staging)
    save_manifest(manifest, staging)
