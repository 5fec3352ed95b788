"""`python -m device doctor`: runtime probes in subprocesses (a crashing runtime is reported and skipped), the
verdict the service uses, the JSON report's schema, and the hardware checks on fake sysfs/dev trees (the only
things faked: a Pi camera and an Edge TPU cannot exist on a build machine)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import device_bundle
import pytest

from device import doctor

REPO = Path(__file__).resolve().parent.parent

CRASHING_RUNTIME = '''"""Stand-in for a runtime whose Interpreter() segfaults (ai-edge-litert 2.3.0 under qemu arm64)."""
import os, signal


class Interpreter:
    def __init__(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGSEGV)


def load_delegate(*args, **kwargs):
    raise ValueError("no delegates here")
'''
HANGING_RUNTIME = CRASHING_RUNTIME.replace("os.kill(os.getpid(), signal.SIGSEGV)", "import time; time.sleep(600)")


def stand_in(folder: Path, name: str, source: str) -> Path:
    (folder / name).mkdir(parents=True)
    (folder / name / "__init__.py").write_text("")
    (folder / name / "interpreter.py").write_text(source)
    return folder


def run_doctor(*arguments, pythonpath=None, cwd=REPO, timeout=180, env=None) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("EDGECAM_", "NOTIFY_", "WATCHDOG_"))}
    environment.update(env or {})
    environment["PYTHONPATH"] = os.pathsep.join(str(p) for p in [*(pythonpath or []), REPO])
    return subprocess.run([sys.executable, "-m", "device", "doctor", *map(str, arguments)], cwd=cwd,
                          env=environment, check=False, capture_output=True, text=True, timeout=timeout)


def test_a_crashing_runtime_is_reported_and_skipped(bundle, tmp_path):
    fakes = stand_in(tmp_path / "fakes", "tflite_runtime", CRASHING_RUNTIME)
    result = run_doctor("--bundle", bundle, "--json", "--runtimes", "tflite_runtime,ai_edge_litert",
                        "--state-dir", tmp_path / "state", "--log-dir", tmp_path / "logs", pythonpath=[fakes])
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    crashed = report["runtimes"]["tflite_runtime"]
    assert crashed["status"] == "crashed" and crashed["signal"] == "SIGSEGV" and crashed["returncode"] == -11
    assert report["runtime"] == "ai_edge_litert" and report["ok"] is True
    checks = {check["name"]: check for check in report["checks"]}
    assert checks["runtime:tflite_runtime"]["status"] == "warn"
    assert "crashed the process with SIGSEGV" in checks["runtime:tflite_runtime"]["summary"]
    assert checks["model"]["status"] == "ok" and checks["model"]["details"]["output_shape"] == [1, 3]
    verdict = json.loads((tmp_path / "state/runtime.json").read_text())
    assert verdict["runtime"] == "ai_edge_litert" and verdict["runtimes"]["tflite_runtime"] == "crashed"


@pytest.mark.slow
def test_the_daemon_runs_on_the_runtime_the_doctor_chose(bundle, tmp_path):
    """The Pi case: the preferred runtime (ai_edge_litert, here a stand-in shadowing the real one) segfaults;
    the doctor picks the next that works (TensorFlow's interpreter here, tflite-runtime on the Pi) and the
    daemon started with EDGECAM_RUNTIME set from its verdict (as install.sh does) runs, where it crashed before."""
    fakes = stand_in(tmp_path / "fakes", "ai_edge_litert", CRASHING_RUNTIME)
    result = run_doctor("--bundle", bundle, "--state-dir", tmp_path / "state", "--log-dir", tmp_path,
                        "--runtimes", "ai_edge_litert,tensorflow", pythonpath=[fakes],
                        env={"EDGECAM_RUNTIME": "tensorflow"})  # TensorFlow only when named (issue 13 #10)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARN] runtime:ai_edge_litert" in result.stdout and "crashed the process with SIGSEGV" in result.stdout
    chosen = json.loads((tmp_path / "state/runtime.json").read_text())["runtime"]
    assert chosen == "tensorflow"
    images = device_bundle.heldout(bundle)[0][1].parent.parent
    daemon = [sys.executable, "-m", "device", "--bundle", str(bundle), "--source", f"images:{images}", "--once",
              "--http", "off", "--max-fps", "0"]
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fakes), str(REPO)]))
    environment.pop("EDGECAM_RUNTIME", None)
    crashed = subprocess.run(daemon, cwd=REPO, env=environment, check=False, capture_output=True, text=True, timeout=120)
    assert crashed.returncode == -11
    ran = subprocess.run(daemon, cwd=REPO, env=dict(environment, EDGECAM_RUNTIME=chosen), check=False, capture_output=True,
                         text=True, timeout=180)
    assert ran.returncode == 0, ran.stderr
    assert len([line for line in ran.stdout.splitlines() if '"label"' in line]) == len(device_bundle.heldout(bundle))


def test_a_hanging_runtime_times_out_and_no_runtime_fails(bundle, tmp_path):
    fakes = stand_in(tmp_path / "fakes", "tflite_runtime", HANGING_RUNTIME)
    result = run_doctor("--bundle", bundle, "--json", "--runtimes", "tflite_runtime", "--timeout", "3",
                        "--log-dir", tmp_path, pythonpath=[fakes])
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["runtimes"]["tflite_runtime"]["status"] == "timeout" and report["runtime"] is None
    checks = {check["name"]: check for check in report["checks"]}
    assert checks["runtime"]["status"] == "fail" and "pip install tflite-runtime" in checks["runtime"]["summary"]
    assert checks["model"]["status"] == "fail" and report["ok"] is False


def validate_report(report: dict) -> None:
    """The JSON schema ``edgecam-doctor/1``, written out as checks."""
    assert report["schema"] == "edgecam-doctor/1"
    types = {"ok": bool, "time": str, "machine": str, "python": str, "bundle": (str, type(None)),
             "model": (str, type(None)), "runtime": (str, type(None)), "runtimes": dict, "checks": list,
             "os": (str, type(None)), "os_codename": (str, type(None))}
    for key, kind in types.items():
        assert isinstance(report[key], kind), (key, report[key])
    assert set(report) == set(types) | {"schema"}
    for name, result in report["runtimes"].items():
        assert name in doctor.RUNTIMES
        assert result["status"] in ("ok", "missing", "crashed", "error", "timeout") and isinstance(result["summary"], str)
    names = [check["name"] for check in report["checks"]]
    assert names == ["os", "python", "numpy", *(f"runtime:{name}" for name in report["runtimes"]), "runtime",
                     "model", "camera", "edgetpu", "disk", "systemd", "outputs"]
    for check in report["checks"]:
        assert set(check) == {"name", "status", "summary", "details"}
        assert check["status"] in doctor.STATUSES and check["summary"] and isinstance(check["details"], dict)
    assert report["ok"] == all(check["status"] != "fail" for check in report["checks"])


def test_report_schema_and_checklist(bundle, tmp_path):
    result = run_doctor("--bundle", bundle, "--json", "--output", tmp_path / "report.json",
                        "--runtimes", "ai_edge_litert,tflite_runtime", "--log-dir", tmp_path / "logs")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    validate_report(report)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    expected = "ok" if importlib.util.find_spec("tflite_runtime") else "missing"
    assert report["runtimes"]["tflite_runtime"]["status"] == expected
    assert report["runtimes"]["ai_edge_litert"]["output_shape"] == [1, 3]

    checklist = run_doctor("--bundle", bundle, "--runtimes", "ai_edge_litert", "--log-dir", tmp_path).stdout
    assert checklist.splitlines()[0].startswith("edgecam doctor: ")
    for name in ("python", "numpy", "runtime:ai_edge_litert", "model", "camera", "edgetpu", "disk", "systemd"):
        assert f" {name} " in checklist, name
    assert checklist.rstrip().endswith("All required checks passed.")


def test_broken_bundle_and_no_bundle(bundle, tmp_path):
    broken = device_bundle.copy_bundle(bundle, tmp_path / "broken")
    (broken / "manifest.json").write_text("{not json")
    result = run_doctor("--bundle", broken, "--json", "--runtimes", "ai_edge_litert", "--log-dir", tmp_path)
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["runtime"] == "ai_edge_litert"  # the runtime imports; the model fails
    model = next(check for check in report["checks"] if check["name"] == "model")
    assert model["status"] == "fail" and "is not valid JSON" in model["summary"]

    result = run_doctor("--json", "--runtimes", "ai_edge_litert", "--log-dir", tmp_path)  # repo: no bundle/ beside
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["bundle"] is None
    assert next(c for c in report["checks"] if c["name"] == "model")["status"] == "skip"
    assert "imports" in report["runtimes"]["ai_edge_litert"]["summary"]


def test_doctor_stays_lean():
    code = "import sys, device.doctor; print(sorted({m.split('.')[0] for m in sys.modules}))"
    output = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO))).stdout
    for name in ("tensorflow", "keras", "train", "convert", "numpy", "ai_edge_litert", "tflite_runtime", "PIL"):
        assert f"'{name}'" not in output, name


# ---- checks on fake hardware trees ---------------------------------------------------------
def fake_usb(root: Path, name: str, vendor: str, product: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "idVendor").write_text(vendor + "\n")
    (root / name / "idProduct").write_text(product + "\n")


def test_edgetpu_usb_and_pcie_detection(tmp_path):
    usb, dev = tmp_path / "usb", tmp_path / "dev"
    dev.mkdir()
    fake_usb(usb, "1-1", "1d6b", "0002")  # a root hub
    assert doctor.find_edgetpu_devices(str(usb), str(dev)) == []
    fake_usb(usb, "1-1.2", "18d1", "9302")  # a Coral USB Accelerator after firmware load
    (dev / "apex_0").touch()  # a PCIe/M.2 Coral
    devices = doctor.find_edgetpu_devices(str(usb), str(dev))
    assert devices == ["usb:1-1.2 (18d1:9302)", f"pci:{dev / 'apex_0'}"]
    assert doctor.check_edgetpu("/usr/lib/libedgetpu.so.1", devices).status == "ok"
    missing_library = doctor.check_edgetpu(None, devices)
    assert missing_library.status == "warn" and "libedgetpu1-std" in missing_library.summary
    no_device = doctor.check_edgetpu("/usr/lib/libedgetpu.so.1", [])
    assert no_device.status == "warn" and "plug it in" in no_device.summary
    assert doctor.check_edgetpu(None, []).status == "skip"
    library = tmp_path / "libedgetpu.so.1"
    library.touch()
    assert doctor.find_edgetpu_library([str(tmp_path / "absent.so"), str(library)]) == str(library)


def test_camera_check_without_and_with_video_devices(tmp_path):
    check = doctor.check_camera([sys.executable], dev=str(tmp_path))
    assert check.status == "warn" and "python3-picamera2" in check.summary
    (tmp_path / "video0").touch()
    check = doctor.check_camera([sys.executable], dev=str(tmp_path))
    assert check.details["video_devices"] == [str(tmp_path / "video0")]
    assert check.status == ("ok" if check.details["picamera2"] else "warn")


def test_disk_and_log_folder(tmp_path):
    check = doctor.check_disk(tmp_path / "logs")
    assert check.status == "ok" and "does not exist yet" in check.summary and check.details["writable"]
    (tmp_path / "logs").mkdir()
    check = doctor.check_disk(tmp_path / "logs")
    assert check.status == "ok" and "writable" in check.summary and check.details["free_bytes"] > 0


def test_notify_socket_under_systemd(tmp_path):
    assert doctor.check_notify({}).status == "skip"
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(5)
        check = doctor.check_notify({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})
        assert check.status == "ok" and check.details["watchdog_usec"] == "30000000"
        assert server.recv(1024).startswith(b"STATUS=edgecam doctor")
    broken = doctor.check_notify({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert broken.status == "fail" and "READY=1" in broken.summary


def test_the_os_release_is_named_and_an_untested_one_warns(tmp_path):
    from device import osrelease

    trixie = tmp_path / "os-release"
    trixie.write_text('PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nNAME="Debian GNU/Linux"\nVERSION_ID="13"\n'
                      "VERSION_CODENAME=trixie\nID=debian\n")
    found = osrelease.os_release([tmp_path / "missing", trixie])
    assert (found["pretty_name"], found["codename"], found["version_id"]) == ("Debian GNU/Linux 13 (trixie)",
                                                                             "trixie", "13")
    check = doctor.check_os(found, "Raspberry Pi 5 Model B Rev 1.0")
    assert check.status == "ok" and check.summary.startswith("Debian GNU/Linux 13 (trixie) on Raspberry Pi 5")
    bullseye = dict(found, pretty_name="Debian GNU/Linux 11 (bullseye)", codename="bullseye")
    check = doctor.check_os(bullseye, "")
    assert check.status == "warn" and "not a release edgecam is tested on" in check.summary, check.summary
    assert doctor.check_os(osrelease.os_release([tmp_path / "missing"]), "").summary.startswith("an unknown OS")
def test_the_doctors_verdict_never_goes_into_the_devices_state_folder(bundle, tmp_path):
    """Issue 26 item 13: doctor's --state-dir meant RELEASE/state (install.sh) and defaulted to $EDGECAM_STATE_DIR
    (the device's state folder): a third meaning. Its folder is --verdict-dir now (install.sh's RELEASE/state),
    and the device's state folder is never written."""
    from device.doctor import build_parser

    state = tmp_path / "state"
    state.mkdir()
    result = run_doctor("--bundle", bundle, "--log-dir", tmp_path, "--runtimes", "ai_edge_litert",
                        env={"EDGECAM_STATE_DIR": str(state)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(state.iterdir()) == []
    assert build_parser().parse_args(["--verdict-dir", "R/state"]).verdict_dir == "R/state"
