"""The kiosk page shows the outputs' health in one small line: a real daemon (subprocess) with a webhook to
a port nobody listens on, the page in Debian's Chromium (headless, Playwright). Skips like the other
browser tests when chromium or playwright is missing."""

import shutil

import device_bundle
import pytest
from outputs_helpers import Daemon, free_port

SETUP_HINT = "run `make setup` (playwright) and `bash scripts/system-deps.sh` (Debian's chromium)"


def test_kiosk_shows_an_output_that_is_not_connected(bundle):
    sync_api = pytest.importorskip("playwright.sync_api", reason=f"playwright is not installed: {SETUP_HINT}")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip(f"no chromium on PATH: {SETUP_HINT}")
    images = device_bundle.heldout(bundle)[0][1].parent.parent
    daemon = Daemon("--bundle", bundle, "--source", f"images:{images}", "--max-fps", "10", "--emit", "off",
                    "--webhook", f"http://127.0.0.1:{free_port()}/hook", "--webhook-retries", "0")
    try:
        daemon.wait_status(lambda s: s["outputs"]["webhook"]["errors"] > 0)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium,
                                                 args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{daemon.port}/")
            line = page.locator('[data-testid="outputs"]')
            line.wait_for(state="visible", timeout=10_000)
            assert "webhook not connected (cannot reach the server" in line.inner_text()
            assert line.get_attribute("data-health") == "warn"
            browser.close()
    finally:
        daemon.kill()
