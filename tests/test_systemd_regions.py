"""Regions in the systemd test bed (tests/systemd_bed.py; issue 27): a region set through the Teach API (kept in
the state folder), taught its own head from frames recorded for it, keeps that head, its box and its labels
through a restart of the service, a new release of the same model and a rollback, while the whole frame keeps
the bundle's own head.

Real: systemd, install.sh, the unit (ProtectSystem=strict: the release is read-only), the daemon, the Teach API
and its teach child. Faked, because it cannot exist here: the camera (frames replayed from /opt/frames, so the
recorded classes are not what the frames show: teaching is forced, this checks where a region's head lives and
that it survives, not how well it classifies)."""

from __future__ import annotations

import pytest
from systemd_bed import REQUIREMENTS, bed_share_fixture, box_fixture, build_archive  # noqa: F401 (fixtures)
from test_systemd_service import UNIT, active_and_healthy, release_of

pytestmark = pytest.mark.slow

BOX = [0, 0, 0.5, 1]


def region_head(box) -> tuple:
    """-> (the region's box, its head revision, its labels) from /status, once the daemon serves the region."""
    found = {}

    def served():
        status, body = box.http("GET", "/status")
        regions = body.get("regions") if status == 200 and isinstance(body, dict) else None
        if regions and regions[0].get("last_result"):
            found["region"] = regions[0]
            return True
        return False

    box.wait_for(served, 30, "the region served")
    region = found["region"]
    return region["box"], region["head"]["revision"], region["labels"]


def test_a_regions_head_survives_restart_redeploy_and_rollback(box, bed_share):
    share, releases, bundle = bed_share
    first = release_of(box)
    box.wait_for(lambda: active_and_healthy(box), 30, "release A serving")
    status, answer = box.http("POST", "/api/regions", {"regions": [{"name": "door", "box": BOX}]})
    assert status == 200, answer
    assert region_head(box) == (BOX, 0, ["paper", "rock", "scissors"])  # untaught: the bundle's own head
    for label in ("open", "closed"):
        for _ in range(6):
            status, answer = box.http("POST", "/api/regions/capture", {"region": "door", "label": label})
            assert status == 200, answer
    status, answer = box.http("POST", "/api/regions/teach", {"region": "door", "force": True}, timeout=170)
    assert status == 200 and answer.get("accepted"), (status, answer)
    box.wait_for(lambda: region_head(box)[1] == 1, 30, "the region's head served")
    taught = region_head(box)
    assert taught == (BOX, 1, ["closed", "open"])
    status, body = box.http("GET", "/status")
    assert body["head"]["revision"] == 0  # the whole frame's head is untouched

    box.run("systemctl", "restart", UNIT)
    box.wait_for(lambda: active_and_healthy(box), 30, "active after the restart")
    assert region_head(box) == taught, "after a restart"

    requirements = share.parent / "requirements-regions.txt"
    requirements.write_text(REQUIREMENTS.read_text() + "# release C: the same model, another release\n")
    second = build_archive(bundle, share / "c.tar.gz", "--requirements", requirements)["id"]
    box.install("c.tar.gz")
    assert (release_of(box), release_of(box, "previous")) == (second, first)
    box.wait_for(lambda: active_and_healthy(box), 30, "release C serving")
    assert region_head(box) == taught, "after a new release of the same model"

    box.install_sh("--rollback")
    assert release_of(box) == first
    box.wait_for(lambda: active_and_healthy(box), 30, "release A serving again")
    assert region_head(box) == taught, "after a rollback"
