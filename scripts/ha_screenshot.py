"""docs/home-assistant-device.png: Home Assistant's device page of a camera, offline, in headless Chromium.

    .venv/bin/python scripts/ha_screenshot.py --bundle artifacts/rps --images data/rps/test

Starts the test's Mosquitto and Home Assistant (tests/home_assistant.py: the cached venv, built on first use),
the daemon on the bundle replaying IMAGES as "Kitchen camera", logs in through Home Assistant's own login
page and saves the device page. Exit 1 with the reason if any step fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "artifacts" / "rps")
    parser.add_argument("--images", type=Path, default=REPO / "data" / "rps" / "test")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "home-assistant-device.png")
    args = parser.parse_args(argv)
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        print("no chromium on PATH: run `make system-deps`", file=sys.stderr)
        return 1
    from home_assistant import PASSWORD, USER, HomeAssistant
    from outputs_helpers import Broker, wait_for
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="edgecam-ha-"))
    (folder / "ha" / ".storage").mkdir(parents=True)
    # onboarding done, as after the first start in a browser: the page goes straight to the login form
    (folder / "ha" / ".storage" / "onboarding").write_text(json.dumps({
        "version": 4, "minor_version": 1, "key": "onboarding",
        "data": {"done": ["user", "core_config", "analytics", "integration"]}}))
    broker = Broker(folder / "broker")
    home = HomeAssistant(folder / "ha", broker.port)
    daemon = subprocess.Popen([sys.executable, "-m", "device", "--bundle", str(args.bundle), "--source",
                               f"images:{args.images}", "--mqtt", broker.url, "--name", "Kitchen camera",
                               "--max-fps", "10", "--mqtt-status-interval", "2", "--http", "off"], cwd=REPO)
    try:
        if not wait_for(lambda: (home.state("sensor.kitchen_camera_label") or {}).get("state") not in
                        (None, "unavailable", "unknown"), 60):
            print("the camera never showed up in Home Assistant", file=sys.stderr)
            return 1
        device = home.template("{{ device_id('sensor.kitchen_camera_label') }}")
        time.sleep(3)  # a status message for the diagnostics
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{home.url}/config/devices/device/{device}")
            page.locator("input[name='username']").fill(USER)
            page.locator("input[name='password']").fill(PASSWORD)
            page.keyboard.press("Enter")
            page.get_by_text("Kitchen camera").first.wait_for(timeout=60_000)
            page.get_by_text("Sees paper").first.wait_for(timeout=30_000)
            time.sleep(3)  # the cards settle
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
        print(f"wrote {args.out}")
        return 0
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
        home.stop()
        broker.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
