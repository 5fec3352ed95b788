"""The Teach view's Regions pane (issue 27) in Debian's Chromium (headless, Playwright) at 800x480, against a real
daemon (real model, a state folder, a data set) replaying a real frame of two photos side by side: a region is
named, its box drawn with the mouse on the whole frame and saved to the state folder (the daemon serves it
without a restart), its crop shows, frames are recorded for it with two labels, it is taught (its own head) and
undone. Skips as tests/test_kiosk_browser.py does without playwright or chromium."""

import pytest
import teach_bundle
from test_kiosk_browser import DaemonProcess, browser  # noqa: F401 - the shared Chromium fixture
from test_regions import photos, write_pairs
from test_teach_browser import Tab, wait_for


@pytest.fixture()
def teach_tab(browser, tmp_path, tmp_path_factory):  # noqa: F811
    from bench.teach import light_copy

    found = photos(tmp_path_factory)
    write_pairs(tmp_path / "frames", [(("paper", found["paper"][0]), ("rock", found["rock"][0]))])
    bundle = light_copy(teach_bundle.shared_teach_bundle(tmp_path_factory), tmp_path / "bundle")
    daemon = DaemonProcess(bundle, tmp_path / "frames", tmp_path / "daemon.log", "--state-dir", str(tmp_path / "state"),
                           "--dataset", str(tmp_path / "dataset"), "--capture-fps", "0", "--smoothing", "1").start()
    context = browser.new_context(viewport={"width": 800, "height": 480}, has_touch=True)
    tab = Tab(context, daemon, "/teach")
    yield tab, daemon
    context.close()
    daemon.stop()
    assert tab.blocked == [], f"the page tried to reach beyond the daemon: {tab.blocked}"
    assert tab.errors == [], f"JavaScript errors: {tab.errors}"


def wait_status(daemon, predicate, timeout=20.0):
    import time

    deadline = time.monotonic() + timeout
    while True:
        status = daemon.status()
        if predicate(status):
            return status
        assert time.monotonic() < deadline, f"status never matched: {status.get('regions')}"
        time.sleep(0.1)


def test_draw_a_region_record_teach_and_undo_it_in_the_teach_view(teach_tab, tmp_path):
    tab, daemon = teach_tab
    tab.testid("tab-regions").click()
    tab.testid("region-name").fill("left")
    tab.testid("region-add").click()
    loaded = "image => image.complete && image.naturalWidth > 0"
    wait_for(lambda: tab.page.locator("#region-frame-image").evaluate(loaded), 10, "no frame to draw on")
    frame = tab.testid("region-frame").bounding_box()
    tab.page.mouse.move(frame["x"] + 1, frame["y"] + 1)
    tab.page.mouse.down()
    tab.page.mouse.move(frame["x"] + frame["width"] / 2, frame["y"] + frame["height"] - 1, steps=5)
    tab.page.mouse.up()
    tab.testid("region-save").click()
    status = wait_status(daemon, lambda s: [r["name"] for r in s.get("regions", [])] == ["left"])
    x, y, width, height = status["regions"][0]["box"]
    assert x < 0.03 and y < 0.05 and abs(width - 0.5) < 0.03 and height > 0.95  # the box as drawn
    status = wait_status(daemon, lambda s: (s["regions"][0]["last_result"] or {}).get("label") == "paper")
    wait_for(lambda: tab.testid("region-crop").evaluate(loaded), 10, "the region's crop never showed")

    for label in ("red", "green"):
        tab.testid("region-label").fill(label)
        for count in range(1, 4):
            tab.testid("region-record").click()
            wait_for(lambda count=count: f"({count})" in tab.testid("region-result").inner_text(), 10, "not recorded")
    tab.testid("region-counts").get_by_text("green: 3").wait_for(timeout=10_000)
    tab.testid("region-teach").click()
    wait_for(lambda: tab.testid("region-result").inner_text().startswith("Accepted"), 60, "not taught")
    wait_status(daemon, lambda s: s["regions"][0]["head"]["revision"] == 1)
    wait_for(lambda: tab.testid("region-undo").is_enabled(), 10, "undo stays disabled")
    tab.testid("region-undo").click()
    wait_status(daemon, lambda s: s["regions"][0]["head"]["revision"] == 0)
    assert "revision 0" in tab.testid("region-result").inner_text()
    tab.page.screenshot(path=str(tmp_path / "teach-regions.png"))
    print(f"screenshot: {tmp_path / 'teach-regions.png'}")
