"""``python -m device doctor [--bundle DIR]``: is this device ready to run edgecam? A checklist, or JSON.

Checks: the OS release (/etc/os-release) and board; Python and NumPy versions; every TFLite runtime, each probed in its own subprocess (a runtime that
crashes the process, e.g. with SIGSEGV inside ``Interpreter()``, is reported and skipped instead of killing
the doctor); the bundle's model loading and giving one inference of the expected shape; the camera
(picamera2 importable, /dev/video*); an Edge TPU (libedgetpu and a USB or PCIe device); free disk and write
access for logs; the systemd notify socket when run under systemd; the MQTT and webhook outputs the
service's settings switch on (paho-mqtt importable, their URLs usable: device/outputs/).

The verdict, the first runtime that worked in device.runtime's order, is written to
``VERDICT_DIR/runtime.json`` (``--verdict-dir``: install.sh gives RELEASE/state, since the verdict belongs to that
release's venv; never the device's state folder). install.sh copies it into
``EDGECAM_RUNTIME=`` in /etc/default/edgecam, which the service reads and device/runtime.py honours.

Standard library only at import time (the daemon stays lean); NumPy and the runtimes load in probes.
Exit status: 0 when every required check passed, 2 when no runtime here has the op versions the model
needs (device/opversions.py: re-convert or upgrade, a retry will not help), 1 for any other failed check.
"""

from __future__ import annotations

import argparse
import ctypes.util
import glob
import importlib.util
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from device.atomic import atomic_write
from device.layout import IMX500_FORMAT, MANIFEST
from device.manifest import ManifestError, load_manifest
from device.osrelease import TESTED_RELEASES, board_model, os_release
from device.runtime import DEVICE_RUNTIMES, RUNTIME_ENV, RUNTIMES, OpVersionError  # importing it loads no interpreter

SCHEMA = "edgecam-doctor/1"
DISTRIBUTIONS = {"ai_edge_litert": ("ai-edge-litert",), "tflite_runtime": ("tflite-runtime",),
                 "tensorflow": ("tensorflow", "tensorflow-cpu")}
STATUSES = ("ok", "warn", "fail", "skip")
PROBE_PYTHON_ENV = "EDGECAM_PROBE_PYTHON"  # command that runs probes, e.g. "qemu-aarch64-static -L ROOT ..."
OP_VERSIONS_REFUSED = "op-versions"  # the model check's details["refused"] when no runtime has the model's ops
EDGETPU_USB_IDS = {("1a6e", "089a"), ("18d1", "9302")}  # before and after its firmware is loaded
EDGETPU_LIBRARY_PATHS = tuple(f"/usr/lib/{arch}libedgetpu.so.1" for arch in
                              ("aarch64-linux-gnu/", "arm-linux-gnueabihf/", "x86_64-linux-gnu/", ""))
STAGES = {"import": "importing the runtime", "interpreter": "in Interpreter() loading the model",
          "inference": "running one inference"}
MIN_PYTHON = (3, 9)  # pyproject's requires-python
MIN_FREE_BYTES = 100 * 1024 * 1024
PACKAGE_PARENT = Path(__file__).resolve().parent.parent  # the release (or repo) folder holding device/


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    summary: str
    details: dict = field(default_factory=dict)


# ---- runtime probes (subprocesses) --------------------------------------------------------
def probe_command(python: str | None = None) -> list:
    """The command that runs a probe's Python: ``python``, else $EDGECAM_PROBE_PYTHON, else this one."""
    text = python or os.environ.get(PROBE_PYTHON_ENV)
    return shlex.split(text) if text else [sys.executable]


def probe_runtime(runtime: str, bundle: Path | None, model: str | None, python: list,
                  timeout: float) -> dict:
    """Load the runtime (and the model, with one inference) in a child process; report how it ended."""
    if not runtime_installed(runtime, python):
        return {"status": "missing", "summary": "not installed"}
    command = python + ["-m", "device.doctor", "--probe", runtime]
    if bundle is not None and model:
        command += ["--bundle", str(bundle), "--model", model]
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(PACKAGE_PARENT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    environment.pop(PROBE_PYTHON_ENV, None)
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.monotonic()
    try:
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout,
                                env=environment)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "summary": f"no answer within {timeout:g} s: skipped"}
    except OSError as error:
        return {"status": "error", "summary": f"cannot start the probe ({error})"}
    seconds = round(time.monotonic() - started, 2)
    output = json_lines(result.stdout)
    stages = [line["stage"] for line in output if "stage" in line]
    reports = [line for line in output if "stage" not in line]
    if result.returncode < 0:
        number = -result.returncode
        name = signal.Signals(number).name if number in signal.valid_signals() else f"signal {number}"
        stage = stages[-1] if stages else None
        where = STAGES.get(stage, "while starting")
        return {"status": "crashed", "signal": name, "returncode": result.returncode, "stage": stage,
                "seconds": seconds, "stderr": tail(result.stderr),
                "summary": f"crashed the process with {name} {where}: skipped, the service will not use it"}
    report = reports[-1] if reports else None
    if report is not None and report.get("status") == "missing":
        return report
    if result.returncode != 0 or report is None:
        error = (report or {}).get("error") or tail(result.stderr) or f"exit status {result.returncode}"
        return {"status": "error", "returncode": result.returncode, "seconds": seconds, "error": error,
                "summary": f"failed: {error.splitlines()[-1] if error else ''}"}
    report.update(status="ok", seconds=seconds)
    return report


def runtime_installed(runtime: str, python: list) -> bool:
    if python == [sys.executable]:
        return importlib.util.find_spec(runtime) is not None
    return True  # another interpreter (e.g. emulated): let the probe find out


def tail(text: str, lines: int = 6) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:])


def json_lines(text: str) -> list:
    """The JSON objects among a probe's output lines (a runtime may print other things too)."""
    values = []
    for line in (text or "").splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            values.append(value)
    return values


def run_probe(runtime: str, bundle: str | None, model: str | None) -> int:
    """The child's side: ``stage`` lines as it goes, then one JSON report line. A crash here is what the
    parent reports, with the last stage reached (import, interpreter, inference)."""
    def stage(name: str) -> None:
        print(json.dumps({"stage": name}), flush=True)

    if importlib.util.find_spec(runtime) is None:
        print(json.dumps({"runtime": runtime, "status": "missing", "summary": "not installed"}))
        return 0
    report = {"runtime": runtime, "version": distribution_version(runtime)}
    try:
        from device.runtime import import_runtime

        stage("import")
        import_runtime(runtime)
        if bundle is None:
            report["summary"] = f"{report['version'] or ''} imports (no bundle, no model loaded)".strip()
        else:
            import numpy as np

            from device.runtime import load_model

            stage("interpreter")
            started = time.perf_counter()
            loaded = load_model(model, bundle, threads=1, runtime=runtime)
            load_ms = (time.perf_counter() - started) * 1000
            batch = np.zeros(loaded.input_shape, dtype=loaded.input_dtype)
            stage("inference")
            started = time.perf_counter()
            output = loaded.run(batch)
            report.update(
                model=loaded.format, file=str(loaded.path), verified=loaded.verified,
                input_shape=[int(v) for v in loaded.input_shape], output_shape=[int(v) for v in output.shape],
                load_ms=round(load_ms, 1), inference_ms=round((time.perf_counter() - started) * 1000, 2))
            report["summary"] = (f"{report['version'] or ''} ran {loaded.format}: output "
                                 f"{tuple(report['output_shape'])} in {report['inference_ms']:.1f} ms").strip()
    except Exception as error:  # noqa: BLE001 - the probe reports any failure as text
        report["error"] = f"{type(error).__name__}: {error}"
        print(json.dumps(report))
        return 1
    print(json.dumps(report))
    return 0


def distribution_version(runtime: str) -> str | None:
    from importlib import metadata

    for name in DISTRIBUTIONS.get(runtime, (runtime,)):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


# ---- the checks --------------------------------------------------------------------------
def check_os(release: dict, board: str) -> Check:
    """The OS release and board; a warning (not a failure) on a release the requirements were not made for."""
    name = release["pretty_name"] or "an unknown OS (no /etc/os-release)"
    codename = release["codename"]
    where = f" on {board}" if board else ""
    details = {**release, "board": board or None, "tested": codename in TESTED_RELEASES}
    if codename in TESTED_RELEASES:
        return Check("os", "ok", f"{name}{where}: tested ({TESTED_RELEASES[codename]})", details)
    return Check("os", "warn", f"{name}{where}: not a release edgecam is tested on ({', '.join(TESTED_RELEASES)}); "
                 "if pip install fails, flash Raspberry Pi OS (trixie) with Raspberry Pi Imager", details)


def check_python() -> Check:
    version = platform.python_version()
    details = {"version": version, "executable": sys.executable, "machine": platform.machine()}
    if sys.version_info < MIN_PYTHON:
        return Check("python", "fail", f"Python {version} is too old: edgecam needs 3.9 or newer", details)
    return Check("python", "ok", f"Python {version} on {platform.machine()} ({sys.executable})", details)


def check_numpy() -> Check:
    try:
        import numpy
    except ImportError as error:
        return Check("numpy", "fail", f"NumPy cannot be imported ({error}): sudo apt install python3-numpy",
                     {"error": str(error)})
    return Check("numpy", "ok", f"NumPy {numpy.__version__} ({Path(numpy.__file__).parent})",
                 {"version": numpy.__version__, "path": str(Path(numpy.__file__).parent)})


def check_runtimes(results: dict) -> list:
    checks = []
    for runtime, result in results.items():
        status = {"ok": "ok", "missing": "skip"}.get(result["status"], "warn")
        summary = result.get("summary", result["status"])
        if runtime == "tensorflow" and result["status"] == "ok" and not tensorflow_named():
            summary += f" (not chosen: only used when {RUNTIME_ENV}=tensorflow names it)"
        checks.append(Check(f"runtime:{runtime}", status, summary, result))
    return checks


def tensorflow_named() -> bool:
    """TensorFlow's interpreter is a host-only fallback: chosen only when EDGECAM_RUNTIME=tensorflow names it."""
    return os.environ.get(RUNTIME_ENV) == "tensorflow"


def default_runtimes() -> tuple:
    return DEVICE_RUNTIMES + (("tensorflow",) if tensorflow_named() else ())


def choose_runtime(results: dict) -> str | None:
    allowed = set(default_runtimes())
    return next((name for name, result in results.items() if result["status"] == "ok" and name in allowed), None)


def check_runtime_choice(chosen: str | None, results: dict) -> Check:
    if chosen is None:
        tried = ", ".join(f"{name} {result['status']}" for name, result in results.items())
        return Check("runtime", "fail", f"no TFLite runtime works ({tried}). Install one: pip install "
                     "tflite-runtime==2.14.0 'numpy<2' (Raspberry Pi OS) or ai-edge-litert", {"runtime": None})
    return Check("runtime", "ok", f"using {chosen} (EDGECAM_RUNTIME={chosen})", {"runtime": chosen})


def check_model(bundle: Path | None, model: str | None, manifest, manifest_error: str | None,
                chosen: str | None, results: dict) -> Check:
    if bundle is None:
        return Check("model", "skip", "no bundle given (--bundle DIR)")
    if manifest_error:
        return Check("model", "fail", manifest_error, {"bundle": str(bundle)})
    if model is None:
        return Check("model", "fail", f"{bundle / MANIFEST} lists no models: convert the bundle "
                     "(python -m convert) and build the device archive again", {"bundle": str(bundle)})
    details = {"bundle": str(bundle), "model": model, "labels": len(manifest.labels)}
    if chosen is None:
        errors = {name: result.get("error") or result.get("summary") for name, result in results.items()}
        too_new = [error.split(": ", 1)[1] for error in errors.values()
                   if (error or "").startswith(f"{OpVersionError.__name__}: ")]
        if too_new:  # the runtime version guard (device/opversions.py): say which op and how to fix it
            return Check("model", "fail", too_new[0], dict(details, errors=errors, refused=OP_VERSIONS_REFUSED))
        return Check("model", "fail", f"{model} model could not be run by any runtime",
                     dict(details, errors=errors))
    result = results[chosen]
    expected = [1, len(manifest.labels)]
    details.update(runtime=chosen, output_shape=result.get("output_shape"), file=result.get("file"),
                   verified=result.get("verified"), inference_ms=result.get("inference_ms"))
    if result.get("output_shape") != expected:
        return Check("model", "fail", f"{model} model gives output {result.get('output_shape')}, expected "
                     f"{expected} for {len(manifest.labels)} labels: re-run python -m convert", details)
    return Check("model", "ok", f"{model} ({Path(result['file']).name}, sha256 "
                 f"{'verified' if result.get('verified') else 'not in manifest'}) loads with {chosen}: output "
                 f"{tuple(expected)} for labels {', '.join(manifest.labels)}", details)


def check_camera(python: list, dev: str = "/dev", timeout: float = 30.0) -> Check:
    videos = sorted(glob.glob(os.path.join(dev, "video*")))
    importable, error = False, "not installed"
    if python != [sys.executable] or importlib.util.find_spec("picamera2") is not None:
        try:
            result = subprocess.run(python + ["-c", "import picamera2"], check=False, capture_output=True,
                                    text=True, timeout=timeout)
            importable, error = result.returncode == 0, tail(result.stderr, 1) or f"exit {result.returncode}"
        except (OSError, subprocess.TimeoutExpired) as exception:
            error = str(exception)
    details = {"picamera2": importable, "video_devices": videos}
    if not importable:
        details["picamera2_error"] = error
    if importable and videos:
        return Check("camera", "ok", f"picamera2 importable; {', '.join(videos[:4])}", details)
    if videos:
        return Check("camera", "warn", f"{', '.join(videos[:4])} present but picamera2 is not importable "
                     f"({error}): sudo apt install python3-picamera2, or use --source opencv:0", details)
    if importable:
        return Check("camera", "warn", f"picamera2 importable but no {dev}/video* device: connect the camera "
                     "and check `rpicam-hello --list-cameras`", details)
    return Check("camera", "warn", f"no camera: picamera2 not importable and no {dev}/video*. On a Pi: sudo apt "
                 "install python3-picamera2 and connect a camera; elsewhere use --source images:DIR", details)


def find_edgetpu_library(paths=EDGETPU_LIBRARY_PATHS) -> str | None:
    for path in paths:
        if os.path.exists(path):
            return path
    return ctypes.util.find_library("edgetpu")


def find_edgetpu_devices(usb_root: str = "/sys/bus/usb/devices", dev: str = "/dev") -> list:
    found = []
    for folder in sorted(glob.glob(os.path.join(usb_root, "*"))):
        try:
            ids = tuple(Path(folder, name).read_text().strip().lower() for name in ("idVendor", "idProduct"))
        except OSError:
            continue
        if ids in EDGETPU_USB_IDS:
            found.append(f"usb:{Path(folder).name} ({ids[0]}:{ids[1]})")
    found += [f"pci:{path}" for path in sorted(glob.glob(os.path.join(dev, "apex_*")))]
    return found


IMX500_FIRMWARE = ("/lib/firmware/imx500_loader.fpk", "/lib/firmware/imx500_firmware.fpk")  # Pi OS imx500-all
IMX500_SENSORS = "/sys/bus/i2c/drivers/imx500/*-*"  # an AI Camera the kernel driver has bound


def check_imx500(bundle: Path, manifest, model: str | None, firmware=IMX500_FIRMWARE, sensors=IMX500_SENSORS,
                 which=shutil.which) -> Check:
    """The AI Camera (a bundle converted with --imx500): imx500-package, the sensor firmware, the camera, and
    the model packaged as network.rpk (install.sh runs imx500-package). A fail only when --model imx500 serves."""
    from device.layout import IMX500_PACKER, IMX500_RPK

    missing = []
    if which("imx500-package") is None:
        missing.append("imx500-package (sudo apt install imx500-all)")
    absent = [path for path in firmware if not os.path.isfile(path)]
    if absent:
        missing.append(f"the sensor firmware {', '.join(absent)} (sudo apt install imx500-all)")
    if not glob.glob(sensors):
        missing.append("an AI Camera (none bound by the imx500 driver: check the ribbon cable, then "
                       "`rpicam-hello --list-cameras`)")
    rpk = Path(bundle) / IMX500_RPK
    if not rpk.is_file():
        missing.append(f"the packaged model {rpk} (never packaged: imx500-package -i {Path(bundle) / IMX500_PACKER} "
                       f"-o {rpk.parent}, or run install.sh again once imx500-package is there)")
    details = {"missing": missing, "rpk": str(rpk), "memory_usage_bytes": manifest.imx500.memory_usage_bytes}
    if not missing:
        return Check("imx500", "ok", f"AI Camera ready: {rpk} (--model imx500 --source imx500:{rpk})", details)
    status = "fail" if model == IMX500_FORMAT else "warn"
    return Check("imx500", status, "the bundle's AI Camera model cannot run here; missing: " + "; ".join(missing),
                 details)


def check_edgetpu(library: str | None, devices: list) -> Check:
    details = {"library": library, "devices": devices}
    if library and devices:
        return Check("edgetpu", "ok", f"{library}; {', '.join(devices)}: use --model edgetpu", details)
    if devices:
        return Check("edgetpu", "warn", f"Edge TPU found ({', '.join(devices)}) but libedgetpu.so.1 is missing: "
                     "install libedgetpu1-std from Coral's apt repository", details)
    if library:
        return Check("edgetpu", "warn", f"{library} is installed but no Edge TPU is plugged in (USB) or "
                     "present (PCIe /dev/apex_0): plug it in, or use --model int8", details)
    return Check("edgetpu", "skip", "no Edge TPU (optional): the CPU runs the int8 model", details)


def check_disk(log_dir: Path) -> Check:
    existing = log_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    usage = shutil.disk_usage(existing)
    details = {"log_dir": str(log_dir), "free_bytes": usage.free, "total_bytes": usage.total}
    free = f"{usage.free / 1e9:.1f} GB free"
    if log_dir.is_dir():
        try:
            with tempfile.NamedTemporaryFile(dir=log_dir, prefix=".doctor-"):
                pass
            writable = True
        except OSError as error:
            writable, details["error"] = False, str(error)
        where = f"{log_dir} writable" if writable else f"{log_dir} is not writable ({details['error']})"
    else:
        writable = os.access(existing, os.W_OK)
        where = (f"{log_dir} does not exist yet, {existing} writable" if writable else
                 f"{log_dir} does not exist and {existing} is not writable (systemd creates it for the service)")
    details["writable"] = writable
    if usage.free < MIN_FREE_BYTES:
        return Check("disk", "warn", f"only {usage.free / 1e6:.0f} MB free on {existing}: free some space "
                     f"(logs rotate, but the SD card must not fill up); {where}", details)
    return Check("disk", "ok" if writable else "warn", f"{free} on {existing}; {where}", details)


def check_notify(environ=None) -> Check:
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return Check("systemd", "skip", "not running under systemd (no NOTIFY_SOCKET)")
    from device.notify import Notifier

    notifier = Notifier(environ)
    details = {"notify_socket": address, "watchdog_usec": environ.get("WATCHDOG_USEC")}
    if notifier.notify("STATUS=edgecam doctor: checks done"):
        return Check("systemd", "ok", f"notify socket {address} accepts messages", details)
    return Check("systemd", "fail", f"NOTIFY_SOCKET={address} cannot be written to: the service would never "
                 "report READY=1 and systemd would restart it", details)


def check_outputs(environ=None) -> Check:
    """The network outputs the service's settings switch on ($EDGECAM_MQTT, $EDGECAM_WEBHOOK and the output
    flags in $EDGECAM_ARGS): a warning, with the fix, for each the daemon would disable (it serves without)."""
    from device.outputs import check_settings
    from device.outputs.settings import from_settings

    environ = os.environ if environ is None else environ
    try:
        settings = from_settings(shlex.split(environ.get("EDGECAM_ARGS", "")), environ)
    except (SystemExit, ValueError) as error:  # argparse refused a value (its message is on stderr)
        return Check("outputs", "fail", f"EDGECAM_ARGS holds an output flag the daemon refuses ({error}): the "
                     "service would exit 2; fix it in /etc/default/edgecam")
    on, disabled = check_settings(settings)
    details = {"on": on, "disabled": disabled}
    if disabled:
        return Check("outputs", "warn", "; ".join(f"{name} will be disabled: {why}" for name, why in
                                                  disabled.items()), details)
    if not on:
        return Check("outputs", "skip", "no MQTT or webhook output is switched on (optional)", details)
    return Check("outputs", "ok", f"{', '.join(on)} can start (reaching them is checked by the daemon)", details)


# ---- the report --------------------------------------------------------------------------
def default_bundle() -> Path | None:
    """An installed release has bundle/ beside device/; use it when --bundle is not given."""
    candidate = PACKAGE_PARENT / "bundle"
    return candidate if (candidate / MANIFEST).is_file() else None


def default_model(manifest) -> str | None:
    if manifest is None or not manifest.models:
        return None
    return "int8" if "int8" in manifest.models else min(manifest.models)


def diagnose(bundle: Path | None = None, model: str | None = None, runtimes=None,
             probe_python: str | None = None, log_dir: Path | None = None, timeout: float = 120.0) -> dict:
    python = probe_command(probe_python)
    runtimes = default_runtimes() if runtimes is None else runtimes
    manifest, manifest_error = None, None
    if bundle is not None:
        try:
            manifest = load_manifest(bundle)
        except ManifestError as error:
            manifest_error = str(error)
    model = model or default_model(manifest)
    use_model = manifest is not None and model is not None
    with ThreadPoolExecutor(max_workers=len(runtimes) or 1) as pool:  # probes are processes: run them at once
        probed = default_model(manifest) if model == IMX500_FORMAT else model  # the sensor's model needs no runtime
        futures = {runtime: pool.submit(probe_runtime, runtime, bundle if use_model and probed else None, probed,
                                        python, timeout) for runtime in runtimes}
        results = {runtime: future.result() for runtime, future in futures.items()}
    chosen = choose_runtime(results)
    log_dir = Path(log_dir or os.environ.get("LOGS_DIRECTORY") or "/var/log/edgecam")
    release = os_release()
    checks = [check_os(release, board_model()), check_python(), check_numpy(), *check_runtimes(results),
              check_runtime_choice(chosen, results),
              check_model(bundle, probed, manifest, manifest_error, chosen, results), check_camera(python),
              check_edgetpu(find_edgetpu_library(), find_edgetpu_devices()), check_disk(log_dir),
              check_notify(), check_outputs()]
    if manifest is not None and manifest.imx500 is not None:
        checks.append(check_imx500(bundle, manifest, model))
    return {"schema": SCHEMA, "ok": all(check.status != "fail" for check in checks),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": platform.machine(),
            "os": release["pretty_name"] or None, "os_codename": release["codename"] or None,
            "python": platform.python_version(), "bundle": str(bundle) if bundle else None, "model": model,
            "runtime": chosen, "runtimes": results, "checks": [asdict(check) for check in checks]}


def format_checklist(report: dict) -> str:
    marks = {"ok": "[ok]  ", "warn": "[WARN]", "fail": "[FAIL]", "skip": "[--]  "}
    lines = [f"edgecam doctor: {report.get('os') or 'unknown OS'}, {report['machine']}, Python {report['python']}, "
             f"bundle {report['bundle'] or '-'}"]
    for check in report["checks"]:
        lines.append(f"  {marks[check['status']]} {check['name']:<24} {check['summary']}")
    failed = [check["name"] for check in report["checks"] if check["status"] == "fail"]
    lines.append("All required checks passed." if not failed else f"FAILED: {', '.join(failed)}")
    return "\n".join(lines)


def write_state(report: dict, state_dir: Path) -> Path:
    """runtime.json (the verdict install.sh turns into EDGECAM_RUNTIME) and doctor.json (the full report)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(state_dir / "doctor.json", json.dumps(report, indent=2) + "\n")
    verdict = {"runtime": report["runtime"], "time": report["time"], "bundle": report["bundle"],
               "python": sys.executable,
               "runtimes": {name: result["status"] for name, result in report["runtimes"].items()}}
    path = state_dir / "runtime.json"
    atomic_write(path, json.dumps(verdict, indent=2) + "\n")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m device doctor",
        description="Check that this device can run edgecam: Python, NumPy, each TFLite runtime (probed in a "
                    "subprocess), the bundle's model, camera, Edge TPU, disk, systemd notify socket.")
    add = parser.add_argument
    add("--bundle", default=None, help="bundle folder (default: the installed release's bundle/ by device/)")
    add("--model", default=None, help="model format to load (default: int8, else the first the bundle has)")
    add("--runtimes", default=",".join(default_runtimes()),
        help=f"runtimes to probe, in order of preference; tensorflow is chosen only when {RUNTIME_ENV}=tensorflow "
             "(default: %(default)s)")
    add("--json", action="store_true", help="print the report as JSON instead of a checklist")
    add("--output", default=None, help="also write the JSON report to this file")
    add("--verdict-dir", "--state-dir", dest="verdict_dir", default=None,
        help="write runtime.json (the runtime to use) and doctor.json into this folder: install.sh gives "
             "RELEASE/state, the verdict of that release's venv (default: nowhere). It is not the device's state "
             "folder ($EDGECAM_STATE_DIR); --state-dir is its old name")
    add("--log-dir", default=None, help="log folder to check (default: $LOGS_DIRECTORY or /var/log/edgecam)")
    add("--probe-python", default=None,
        help=f"command running the probes' Python (default: ${PROBE_PYTHON_ENV}, else this interpreter)")
    add("--timeout", type=float, default=120.0, help="seconds each runtime probe may take (default: %(default)s)")
    add("--probe", default=None, help=argparse.SUPPRESS)  # internal: run one probe (the child's side)
    return parser


def main(argv: list | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.probe:
        return run_probe(args.probe, args.bundle, args.model)
    runtimes = [name.strip() for name in args.runtimes.split(",") if name.strip()]
    unknown = [name for name in runtimes if name not in RUNTIMES]
    if unknown:
        print(f"device doctor: unknown runtime {', '.join(unknown)}; known: {', '.join(RUNTIMES)}",
              file=sys.stderr)
        return 2
    bundle = Path(args.bundle).resolve() if args.bundle else default_bundle()
    report = diagnose(bundle, args.model, runtimes, args.probe_python,
                      Path(args.log_dir) if args.log_dir else None, args.timeout)
    if args.verdict_dir:
        write_state(report, Path(args.verdict_dir))
    if args.output:
        atomic_write(Path(args.output), json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else format_checklist(report))
    refused = any(check["details"].get("refused") == OP_VERSIONS_REFUSED for check in report["checks"])
    return 0 if report["ok"] else 2 if refused else 1  # 2: the bundle cannot run here, retrying will not help


if __name__ == "__main__":
    sys.exit(main())
