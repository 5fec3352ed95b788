"""No test writes into a real state folder (issue 26 item 14): tests/conftest.py takes an exported
$EDGECAM_STATE_DIR / $STATE_DIRECTORY out of the environment for the whole session (in-process and every
subprocess the tests start), points the installed device's /var/lib/edgecam and its data set at a folder
that does not exist, and fails any test after which a real state folder changed."""

import os
import subprocess
import sys
from pathlib import Path

import conftest

from device import state
from device.teach.dataset import default_root

REPO = Path(__file__).resolve().parent.parent


def test_no_state_folder_is_found_in_process_or_in_a_subprocess():
    assert "EDGECAM_STATE_DIR" not in os.environ and "STATE_DIRECTORY" not in os.environ
    assert state.device_state_dir() is None
    assert default_root("tiny") == Path("data") / "tiny-own"
    code = "from device import state; print(state.resolve_state_dir())"
    found = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                           capture_output=True, text=True, check=True, timeout=60).stdout
    assert found.strip() == "None"


def test_the_check_sees_a_write_into_a_watched_folder(tmp_path):
    folder = tmp_path / "state"
    (folder / "dataset" / "paper").mkdir(parents=True)
    before = conftest.fingerprint(folder)
    assert conftest.fingerprint(folder) == before
    (folder / "dataset" / "paper" / "frame.jpg").write_bytes(b"x")
    changed = conftest.changes(before, conftest.fingerprint(folder))
    assert changed and str(folder / "dataset" / "paper") in changed[0]
