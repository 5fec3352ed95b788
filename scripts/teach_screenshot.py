"""docs/teach.png: the Teach view (/teach) of a real daemon at 800x480 (a 7-inch Pi screen), after teaching.

    .venv/bin/python scripts/teach_screenshot.py --bundle artifacts/rps --images data/rps/test

Starts `python -m device` on a copy of the bundle (int8, with a fresh dataset folder, in a temporary directory) whose
camera is a small folder this script fills with each class of IMAGES in turn; records FRAMES frames of each
class through the Teach API, teaches (POST /api/teach), then opens /teach in headless Chromium (Playwright,
Debian's chromium: `make system-deps`), picks the first class and saves the screenshot. The bundle must have
been converted with the embedding output (python -m convert). Exit 1 with the reason if any step fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(base: str, path: str, body: dict | None = None, timeout: float = 120) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def show(camera: Path, pictures: list, frames: int = 4) -> None:
    """Point the daemon's images: camera at PICTURES (it re-reads each file every time it comes round)."""
    for number in range(frames):
        temporary = camera / f".frame{number}.tmp"
        shutil.copyfile(pictures[number % len(pictures)], temporary)
        os.replace(temporary, camera / f"frame{number}.png")  # Pillow reads JPEGs named .png too


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=REPO / "artifacts" / "rps")
    parser.add_argument("--images", type=Path, default=REPO / "data" / "rps" / "test",
                        help="a folder of class folders: each class is shown to the camera and recorded in turn")
    parser.add_argument("--frames", type=int, default=12, help="frames recorded per class")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "teach.png")
    args = parser.parse_args(argv)
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        print("no chromium on PATH: run `make system-deps`", file=sys.stderr)
        return 1
    classes = {folder.name: sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
               for folder in sorted(args.images.iterdir()) if folder.is_dir()}
    classes = {name: pictures for name, pictures in classes.items() if pictures}
    if len(classes) < 2:
        print(f"{args.images} needs at least two class folders of images", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="edgecam-teach-shot-"))
    bundle = Path(shutil.copytree(args.bundle, work / "bundle", ignore=shutil.ignore_patterns(  # teaching writes
        "saved_model", "checkpoints", "logs", "*.keras", "heads")))                            # heads/: a copy
    camera = work / "camera"
    camera.mkdir()
    show(camera, next(iter(classes.values())))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    daemon = subprocess.Popen([sys.executable, "-m", "device", "--bundle", str(bundle), "--model", "int8",
                               "--source", f"images:{camera}", "--max-fps", "10", "--emit", "off",
                               "--dataset", str(work / "dataset"), "--capture-fps", "10",
                               "--http", f"127.0.0.1:{port}"], cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or daemon.poll() is not None:
                    print("the daemon did not become healthy", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        for name, pictures in classes.items():
            call(base, "/api/classes", {"name": name})
            show(camera, pictures)
            time.sleep(0.6)  # the replay comes round to the new pictures
            for _ in range(args.frames):
                call(base, "/api/capture", {"label": name})
                time.sleep(0.12)
        answer = call(base, "/api/teach", {"force": False})
        print(f"teach: accepted={answer['accepted']} new={answer['accuracy_new']} "
              f"current={answer['accuracy_current']} ({answer['reason']})")
        first = next(iter(classes))
        show(camera, classes[first])
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=browser_path, args=["--headless", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 800, "height": 480})
            page.goto(f"{base}/teach")
            page.get_by_test_id(f"class-{first}").click()
            page.wait_for_function("() => document.querySelectorAll('[data-testid=thumbs] img').length > 0 && "
                                   "Array.from(document.querySelectorAll('[data-testid=thumbs] img'))"
                                   ".every(image => image.complete && image.naturalWidth > 0)", timeout=15_000)
            page.wait_for_function("() => document.querySelector('[data-testid=live]').naturalWidth > 0",
                                   timeout=15_000)
            page.wait_for_timeout(1500)  # the live label and the head line settle
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
            browser.close()
        print(f"teach screenshot: {args.out}")
        return 0
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
