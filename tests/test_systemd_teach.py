"""The whole path once, for real (issue 18 item 4), in the systemd test bed (tests/systemd_bed.py): install the
archive, record frames through the Teach view's HTTP API from the replayed folder, teach, restart the
service, install a new release with the same model, roll back, and after each step check that the taught
head serves: /status shows its labels and its predictions on one fixed frame are unchanged. On Raspberry Pi OS
today (trixie: Python 3.13, apt's NumPy 2.2, ai-edge-litert) and before (bookworm: Python 3.11, NumPy 1.24), with
the one archive and its one requirements file.

Real: systemd, install.sh, the unit (ProtectSystem=strict: the release is read-only), the daemon, the Teach
API and its teach child. Faked, because it cannot exist here: the camera (frames replayed from /opt/frames,
so the recorded classes are not what the frames show: teaching is forced, this checks where heads live and
that they survive, not how well they classify).
"""

from __future__ import annotations

import time

import pytest
from systemd_bed import REQUIREMENTS, bed_share_fixture, bookworm_box_fixture, box_fixture, build_archive  # noqa: F401 (fixtures)
from test_systemd_service import MIB, UNIT, active_and_healthy, capture, release_of

FIXED = "/opt/frames/paper/paper_000.png"  # the frame whose predictions are compared (--smoothing 1)


def predictions(box, timeout: float = 30) -> dict:
    """-> {"labels", "probabilities"} of the fixed frame, read from /status when the source replays it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = box.http("GET", "/status")
        result = body.get("last_result") if status == 200 else None
        if result and result.get("item") == FIXED:
            return {"labels": body["model"]["labels"], "probabilities": result["probabilities"]}
        time.sleep(0.05)
    raise AssertionError(f"{FIXED} was not replayed within {timeout} s: {body}")


@pytest.fixture(params=["trixie", "bookworm"])
def release_box(request):
    """Raspberry Pi OS today (trixie) and before 2025-10 (bookworm): install, teach and rollback on both."""
    return request.getfixturevalue("box" if request.param == "trixie" else "bookworm_box")


def test_a_taught_head_survives_restart_redeploy_and_rollback(release_box, bed_share):
    box = release_box
    share, releases, bundle = bed_share
    os_release = box.run("cat", "/etc/os-release").stdout
    assert f"VERSION_CODENAME={box.release}" in os_release, os_release  # the release this run claims
    first = release_of(box)
    box.wait_for(lambda: active_and_healthy(box), 30, "release A serving")
    shipped = predictions(box)
    for label in ("paper", "rock", "scissors", "thumbs"):  # thumbs: a class the shipped model does not know
        capture(box, label, 6)

    box.sh(f"echo 0 > /sys/fs/cgroup/memory/system.slice/{UNIT}/memory.max_usage_in_bytes")
    status, answer = box.http("POST", "/api/teach", {"force": True}, timeout=170)
    peak = box.memory()["peak"]
    assert status == 200 and answer.get("accepted"), (status, answer)
    print(f"service memory peak with the teach child: {peak / MIB:.1f} MiB (MemoryMax 256 MiB)")
    assert peak < 256 * MIB
    taught = predictions(box)
    assert "thumbs" in taught["labels"] and "thumbs" not in shipped["labels"], taught

    box.run("systemctl", "restart", UNIT)
    box.wait_for(lambda: active_and_healthy(box), 30, "active after the restart")
    assert predictions(box) == taught, "after a restart"

    requirements = share.parent / "requirements-b.txt"
    requirements.write_text(REQUIREMENTS.read_text() + "# release B: the same model, another release\n")
    second = build_archive(bundle, share / "b.tar.gz", "--requirements", requirements)["id"]
    assert second != first
    box.install("b.tar.gz")
    assert (release_of(box), release_of(box, "previous")) == (second, first)
    box.wait_for(lambda: active_and_healthy(box), 30, "release B serving")
    assert predictions(box) == taught, "after a new release of the same model"

    box.install_sh("--rollback")
    assert release_of(box) == first
    box.wait_for(lambda: active_and_healthy(box), 30, "release A serving again")
    assert predictions(box) == taught, "after a rollback"
