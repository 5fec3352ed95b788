"""docs/kiosk.png: the kiosk page of a real daemon on a trained bundle, after one played round.

    .venv/bin/python scripts/kiosk_screenshot.py --bundle artifacts/rps --images data/rps/test

Starts `python -m device` on the bundle (int8, replaying IMAGES as its camera), opens the page in headless
Chromium (Playwright, Debian's chromium: `make system-deps`), waits for a confident reading, plays one round
with the Play button and saves the screenshot. Exit 1 with the reason if any step fails.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "artifacts" / "rps")
    parser.add_argument("--images", type=Path, default=REPO / "data" / "rps" / "test",
                        help="a folder to replay; one class sub-folder keeps the live view on one gesture")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "kiosk.png")
    args = parser.parse_args(argv)
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        print("no chromium on PATH: run `make system-deps`", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    port = free_port()
    daemon = subprocess.Popen([sys.executable, "-m", "device", "--bundle", str(args.bundle), "--model", "int8",
                               "--source", f"images:{args.images}", "--max-fps", "2", "--emit", "off",
                               "--http", f"127.0.0.1:{port}"], cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or daemon.poll() is not None:
                    print("the daemon did not become healthy", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=browser_path, args=["--headless", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.goto(f"http://127.0.0.1:{port}/?countdown=300")
            page.wait_for_function(
                "() => ['rock','paper','scissors'].includes("
                "document.querySelector('[data-testid=label]')?.getAttribute('data-label'))", timeout=15_000)
            page.get_by_test_id("play").click()
            page.get_by_test_id("reveal").wait_for(state="visible", timeout=15_000)
            page.wait_for_timeout(300)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
            browser.close()
        print(f"kiosk screenshot: {args.out}")
        return 0
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
