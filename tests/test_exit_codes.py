"""The exit-code table (docs/reference.md), row by row, for every command: python -m device, its capture, teach, evaluate
and doctor, python -m train and python -m convert (issue 19, item 7). Each case runs the real command in a
real subprocess on real files; full disks are real tmpfs mounts filled to the last page (tests/full_disk.py).
Codes 0 and 1 of the slower paths (a whole training, a parity failure, an accepted or refused head, a daemon
run) are asserted where those features are tested: test_train, test_convert, test_teach_revisions,
test_device_daemon, test_doctor; a port in use (3) in test_faults."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import device_bundle
import pytest
import teach_bundle
from full_disk import fill, tmpfs

from device import exitcodes

REPO = Path(__file__).resolve().parent.parent


def run(module: str, *arguments, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", *module.split(), *map(str, arguments)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def assert_exit(result: subprocess.CompletedProcess, code: int, *texts: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for text in texts:
        assert text in result.stderr, (text, result.stderr[-3000:])


@pytest.fixture()
def taught(tmp_path_factory, tmp_path) -> Path:
    """A private copy of the converted bundle with an embedding output (teach needs one)."""
    from bench.teach import light_copy

    return light_copy(teach_bundle.shared_teach_bundle(tmp_path_factory), tmp_path / "bundle")


@pytest.fixture()
def images(tmp_path_factory) -> Path:
    return teach_bundle.images_root(tmp_path_factory) / "train"


# ---- capture: 0, 2 (bad source, no library, full disk), 3 (camera busy: test_device_sources) ----------------
@pytest.mark.parametrize("case", ["empty", "missing"])
def test_capture_from_an_empty_or_missing_folder_exits_2_with_the_fix(case, taught, tmp_path):
    folder = tmp_path / "frames"
    if case == "empty":
        folder.mkdir()
    result = run("device capture", "--bundle", taught, "--source", f"images:{folder}", "--label", "paper",
                 "--count", 1, "--dataset", tmp_path / "ds", "--min-free-mb", 0)
    assert_exit(result, exitcodes.BAD_INPUT, "edgecam capture: ", "check the path given to --source images:DIR")
    assert not list((tmp_path / "ds" / "paper").iterdir())


def test_capture_without_picamera2_exits_2_with_the_install_line(taught, tmp_path):
    try:
        import picamera2  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("picamera2 is installed here (a Pi): the missing-library message cannot be checked")
    result = run("device capture", "--bundle", taught, "--source", "picamera2", "--label", "paper",
                 "--dataset", tmp_path / "ds")
    assert_exit(result, exitcodes.BAD_INPUT, "sudo apt install python3-picamera2")


@pytest.mark.parametrize("leave_kb", [0, 4])
def test_capture_on_a_full_disk_exits_2_and_says_the_disk_is_full(leave_kb, taught, images, tmp_path):
    """0 kB left: the free-space check stops it; 4 kB (one page): the check passes, the frame fits, and the
    index line meets ENOSPC. Either way: the disk, not the camera; and what was reported is what is on disk."""
    with tmpfs(tmp_path / "disk", "1m") as disk:
        (disk / "ds" / "paper").mkdir(parents=True)
        fill(disk, leave_kb)
        result = run("device capture", "--bundle", taught, "--source", f"images:{images / 'paper'}", "--label",
                     "paper", "--count", 3, "--interval", 0, "--dataset", disk / "ds", "--min-free-mb", 0)
        assert_exit(result, exitcodes.BAD_INPUT, "disk is", "full")
        assert "camera" not in result.stderr
        reported = sorted(json.loads(line)["file"] for line in result.stdout.splitlines())
        on_disk = sorted(f"paper/{path.name}" for path in (disk / "ds" / "paper").iterdir())
        assert reported == on_disk


FAKE_PICAMERA2 = Path(__file__).resolve().parent / "fake_picamera2"  # no Pi camera on a build machine


def with_fake_picamera2(mode: str) -> dict:
    return {"PYTHONPATH": os.pathsep.join([str(REPO), str(FAKE_PICAMERA2)]), "EDGECAM_FAKE_PICAMERA2": mode}


def test_capture_from_the_pi_camera_records_its_main_stream_not_the_model_sized_one(taught, tmp_path):
    """Issue 19, item 18: the data set keeps the camera's main stream (sources.CAPTURE_SIZE), so a host retrain
    can use a larger input than the model the device runs (32x32 here); the stand-in's main stream is red."""
    from PIL import Image

    from device.sources import CAPTURE_SIZE

    result = run("device capture", "--bundle", taught, "--source", "picamera2", "--label", "paper", "--count", 2,
                 "--interval", 0, "--dataset", tmp_path / "ds", "--min-free-mb", 0, env=with_fake_picamera2("pi5"))
    assert_exit(result, exitcodes.OK, "recorded 2 frames of paper")
    files = sorted((tmp_path / "ds" / "paper").glob("*.jpg"))
    assert len(files) == 2
    with Image.open(files[0]) as image:
        assert image.size == CAPTURE_SIZE
        red, green, blue = image.convert("RGB").getpixel((5, 5))
        assert red > 150 and blue < 60


def test_capture_from_a_busy_camera_exits_3(taught, tmp_path):
    result = run("device capture", "--bundle", taught, "--source", "picamera2", "--label", "paper",
                 "--dataset", tmp_path / "ds", env=with_fake_picamera2("busy"))
    assert_exit(result, exitcodes.RETRY, "Device or resource busy", "try again when the camera is free")


def test_capture_records_and_exits_0(taught, images, tmp_path):
    result = run("device capture", "--bundle", taught, "--source", f"images:{images / 'rock'}", "--label", "rock",
                 "--count", 2, "--interval", 0, "--dataset", tmp_path / "ds", "--min-free-mb", 0)
    assert_exit(result, exitcodes.OK, "recorded 2 frames of rock")


# ---- teach: 2 (full disk, too little data), 3 (the bundle locked); 0 and 1 in test_teach_revisions ---------
def test_teach_on_a_full_disk_exits_2_says_so_and_leaves_no_half_revision(taught, images, tmp_path):
    with tmpfs(tmp_path / "disk", "2m") as disk:
        bundle = Path(shutil.copytree(taught, disk / "bundle"))
        fill(disk, 0)
        for flags in ((), ("--json",)):
            result = run("device teach", "--bundle", bundle, "--data", images, "--threads", 1, *flags,
                         env={"EDGECAM_STATE_DIR": str(disk / "state")})
            assert_exit(result, exitcodes.BAD_INPUT, "edgecam teach: ", "is full: free some space")
        assert "is full: free some space" in json.loads(result.stdout.splitlines()[-1])["error"]  # the daemon reads it
        leftovers = [path for path in disk.rglob("*") if ".tmp" in path.name]
        assert leftovers == []


def test_teach_with_too_little_data_exits_2(taught, tmp_path):
    (tmp_path / "ds" / "paper").mkdir(parents=True)
    result = run("device teach", "--bundle", taught, "--data", tmp_path / "ds")
    assert_exit(result, exitcodes.BAD_INPUT, "teaching needs at least 2")


def test_teach_while_the_bundle_is_locked_exits_3(taught, images):
    from device.layout import acquire_lock

    lock = acquire_lock(taught)  # as convert/ or another teach holds it while writing
    try:
        result = run("device teach", "--bundle", taught, "--data", images, "--threads", 1)
    finally:
        lock.close()
    assert_exit(result, exitcodes.RETRY, "is being written by another")


# ---- evaluate: 0 in test_teach_revisions; 2 for a bad --out or data -------------------------------------
def test_evaluate_into_a_path_under_a_file_exits_2(taught, images, tmp_path):
    result = run("device evaluate", "--bundle", taught, "--data", images, "--out", "/etc/passwd/ev", "--threads", 1)
    assert_exit(result, exitcodes.BAD_INPUT, "edgecam evaluate: ", "/etc/passwd/ev", "not a folder")


def test_evaluate_onto_a_full_disk_exits_2(taught, images, tmp_path):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        fill(disk, 0)
        result = run("device evaluate", "--bundle", taught, "--data", images, "--out", disk / "ev", "--threads", 1)
        assert_exit(result, exitcodes.BAD_INPUT, "the disk is full")


# ---- python -m device, doctor, train, convert -------------------------------------------------------------
def test_the_daemon_with_a_missing_bundle_exits_2(tmp_path):
    result = run("device", "--bundle", tmp_path / "nowhere", "--source", f"images:{tmp_path}", "--http", "off")
    assert_exit(result, exitcodes.BAD_INPUT, "does not exist")


def test_doctor_that_cannot_write_its_state_exits_2(tmp_path):
    result = run("device doctor", "--runtimes", "ai_edge_litert", "--state-dir", "/etc/passwd/state")
    assert_exit(result, exitcodes.BAD_INPUT, "/etc/passwd/state", "not a folder")


def test_doctor_with_an_unknown_runtime_exits_2():
    assert_exit(run("device doctor", "--runtimes", "nonesuch"), exitcodes.BAD_INPUT, "unknown runtime")


def test_train_and_convert_exit_2_on_missing_input_and_3_on_a_locked_bundle(tmp_path_factory, tmp_path):
    from device.layout import acquire_lock

    bundle = device_bundle.copy_bundle(device_bundle.shared_bundle(tmp_path_factory), tmp_path / "bundle")
    assert_exit(run("convert", tmp_path / "nowhere"), exitcodes.BAD_INPUT)
    assert_exit(run("train", "--data", tmp_path / "nowhere", "--out", tmp_path / "out"), exitcodes.BAD_INPUT,
                "does not exist")
    lock = acquire_lock(bundle)
    try:
        assert_exit(run("convert", bundle, "--skip-parity", "--formats", "float32"), exitcodes.RETRY,
                    "being written by another")
    finally:
        lock.close()


def test_every_entry_point_goes_through_the_one_helper():
    """python -m device (and so its subcommands), train and convert: an OSError that escapes ends in the
    contract's code with a message, never in Python's traceback and 1."""
    for entry in ("device/__main__.py", "train/__main__.py", "convert/__main__.py"):
        text = (REPO / entry).read_text()
        assert "from device.exitcodes import run" in text and "sys.exit(run(" in text, entry


@pytest.mark.parametrize("error, code, text", [
    (OSError(28, "No space left on device", "/data/x.jpg"), 2, "the disk is full: writing /data/x.jpg"),
    (PermissionError(13, "Permission denied", "/b/manifest.json"), 2, "/b/manifest.json: permission denied"),
    (NotADirectoryError(20, "Not a directory", "/etc/passwd/ev"), 2, "a part of this path is a file"),
    (OSError(30, "Read-only file system", "/opt/x"), 2, "read-only file system"),
    (BlockingIOError(11, "Resource temporarily unavailable", "/dev/video0"), 3, "try again in a moment"),
    (OSError(16, "Device or resource busy", "/dev/video0"), 3, "try again in a moment"),
])
def test_one_map_from_an_os_error_to_a_code_and_a_line(error, code, text):
    assert exitcodes.code_for(error) == code and text in exitcodes.describe(error)


# ---- --ha-remove: 3 when the broker cannot be reached (a retry helps), as the table says ---------------------
def test_ha_remove_without_a_broker_exits_3_and_says_to_try_again(bundle):
    import socket

    with socket.socket() as probe:  # a port nothing listens on: bound, then released before the command runs
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run("device", "--bundle", bundle, "--mqtt", f"mqtt://127.0.0.1:{port}", "--ha-remove", timeout=60)
    assert result.returncode == exitcodes.RETRY, (result.returncode, result.stdout, result.stderr[-2000:])
    assert "cannot reach 127.0.0.1" in result.stdout and "try again when the broker is up" in result.stdout
    assert "Traceback" not in result.stderr
