"""device/web.py over real HTTP: a real daemon (real model, image-folder source) in this process on a free
loopback port, read with http.client (raw paths, so traversal attempts reach the server unnormalised)."""

import http.client
import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import device_bundle
import pytest

from device.daemon import Daemon, Options
from device.http import web

REPO = Path(__file__).resolve().parent.parent


class Running:
    """A daemon whose inference loop runs in a thread of the test process."""

    def __init__(self, bundle, source=None, **overrides):
        images = device_bundle.heldout(bundle)[0][1].parent.parent
        options = {"bundle": str(bundle), "source": source or f"images:{images}", "http": "127.0.0.1:0",
                   "max_fps": 200, "threads": 1, "emit": "off"}
        options.update(overrides)
        self.daemon = Daemon(Options(**options))
        self.daemon.start()
        self.thread = threading.Thread(target=self.daemon.run, daemon=True)
        self.thread.start()
        self.port = self.daemon.server.port

    def get(self, path, headers=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()

    def wait(self, condition, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out waiting for the daemon"
            time.sleep(0.02)

    def stop(self):
        self.daemon.stopping.set()
        self.thread.join(3)
        self.daemon.shutdown()


@pytest.fixture
def running(bundle):
    runner = Running(bundle)
    runner.wait(lambda: runner.daemon.frame_number >= 3)
    yield runner
    runner.stop()


def static_links(page: str) -> list:
    return re.findall(r'(?:src|href)="(/static/[^"]+)"', page)


def test_page_and_its_files_with_content_types_and_caching(running):
    code, headers, body = running.get("/")
    page = body.decode()
    assert code == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    assert "default-src 'self'" in headers["Content-Security-Policy"]  # the browser may load nothing else
    links = static_links(page)
    names = sorted(link.split("?")[0].rsplit("/", 1)[1] for link in links)
    assert names == ["game.js", "icon.svg", "kiosk.css", "kiosk.js"]
    assert "http://" not in page and "https://" not in page and "//fonts" not in page
    expected = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".svg": "image/svg+xml"}
    for link in links:
        code, headers, body = running.get(link.replace("&amp;", "&"))
        path = web.KIOSK_DIR / link.split("?")[0].rsplit("/", 1)[1]
        assert code == 200 and body == path.read_bytes()
        assert headers["Content-Type"] == expected[path.suffix]
        assert headers["Cache-Control"] == "public, max-age=31536000, immutable"  # stamped with its hash
        assert headers["X-Content-Type-Options"] == "nosniff"
    code, headers, _ = running.get("/static/kiosk.js")  # unstamped: revalidate, with an ETag
    assert code == 200 and headers["Cache-Control"] == "no-cache"
    code, headers, body = running.get("/static/kiosk.js", {"If-None-Match": headers["ETag"]})
    assert code == 304 and body == b""
    assert running.get("/index.html")[0] == 200


TRAVERSALS = [
    "/static/../web.py", "/static/..%2fweb.py", "/static/%2e%2e/web.py", "/static/%2e%2e%2fweb.py",
    "/static/kiosk/../../web.py", "/static//etc/passwd", "/static/", "/static/.", "/static/..",
    "/static/index.html", "/static/missing.js", "/static/KIOSK.JS", "/static/kiosk.js/", "/../device/web.py",
]


def test_no_directory_traversal_and_unknown_paths_are_404(running):
    for path in TRAVERSALS:
        code, headers, body = running.get(path)
        assert (code, headers["Content-Type"]) == (404, "application/json"), path
        assert b"import" not in body, path


def test_a_page_opened_with_the_token_gets_it_as_a_same_site_cookie_not_in_links(bundle):
    runner = Running(bundle, token="s3cret-kiosk-token-0123&x")
    try:
        assert runner.get("/")[0] == 401
        code, headers, body = runner.get("/?token=s3cret-kiosk-token-0123%26x")
        assert code == 200
        cookie = headers["Set-Cookie"]
        name = f"edgecam_token_{runner.daemon.server.port}"
        assert cookie.startswith(f"{name}=s3cret-kiosk-token-0123%26x;")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        links = [link.replace("&amp;", "&") for link in static_links(body.decode())]
        assert links and not any("token" in link for link in links)
        jar = {"Cookie": cookie.split(";")[0]}
        assert all(runner.get(link, jar)[0] == 200 for link in links)
        assert runner.get("/status", jar)[0] == 200 and "Set-Cookie" not in runner.get("/status", jar)[1]
        assert runner.get("/static/kiosk.js")[0] == 401
        code, headers, _ = runner.get("/status", {"Cookie": f"{name}=stale-token-from-before-0123"})
        assert code == 401 and "Max-Age=0" in headers["Set-Cookie"]  # a stale cookie is dropped
        assert runner.get("/status", {"Cookie": f"edgecam_token_1={'s3cret-kiosk-token-0123%26x'}"})[0] == 401
    finally:
        runner.stop()


def test_frame_jpg_is_the_newest_camera_frame(running):
    from PIL import Image

    code, headers, body = running.get("/frame.jpg")
    assert code == 200 and headers["Content-Type"] == "image/jpeg" and headers["Cache-Control"] == "no-store"
    image = Image.open(io.BytesIO(body))
    height, width = running.daemon.latest_frame().shape[:2]
    assert image.format == "JPEG" and image.size == (width, height) and image.mode == "RGB"


def test_frame_jpg_is_503_until_the_camera_delivers(bundle, tmp_path):
    runner = Running(bundle, source=f"images:{tmp_path / 'no-such-folder'}")
    try:
        runner.wait(lambda: runner.daemon.state() == "degraded")
        code, _, body = runner.get("/frame.jpg")
        assert code == 503 and "no camera frame yet" in json.loads(body)["error"]
    finally:
        runner.stop()


def read_parts(sock_file, seconds: float) -> int:
    """Reads MJPEG parts for ``seconds``; returns how many complete JPEGs arrived."""
    parts = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = sock_file.readline()
        if not line:
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
            sock_file.readline()  # blank line
            assert sock_file.read(length)[:2] == b"\xff\xd8"  # a JPEG
            parts += 1
    return parts


def open_stream(port: int):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    stream = sock.makefile("rb")
    status = stream.readline()
    headers = []
    while (line := stream.readline()) not in (b"\r\n", b""):
        headers.append(line.decode().strip())
    return sock, stream, status, headers


def test_mjpeg_encodes_only_for_a_connected_viewer_at_a_capped_rate(running, monkeypatch):
    encoded = []
    real_encode = web.encode_jpeg
    monkeypatch.setattr(web, "encode_jpeg", lambda frame, *a: encoded.append(1) or real_encode(frame, *a))
    frames = running.daemon.frame_number
    time.sleep(0.5)
    assert running.daemon.frame_number > frames + 20 and encoded == []  # inference never encodes

    sock, stream, status, headers = open_stream(running.port)
    assert status.startswith(b"HTTP/1.1 200")
    assert f"Content-Type: multipart/x-mixed-replace; boundary={web.BOUNDARY}" in headers
    started = time.monotonic()
    parts = read_parts(stream, 1.5)
    elapsed = time.monotonic() - started
    assert 4 <= parts <= web.STREAM_MAX_FPS * elapsed + 2  # the daemon runs at ~200 fps; the view is capped
    stream.close()
    sock.close()
    time.sleep(0.6)  # the next write or two fail: that viewer's thread ends
    after_close = len(encoded)
    time.sleep(1.0)
    assert len(encoded) == after_close, "still encoding for a viewer that has gone"


def test_mjpeg_stream_ends_when_the_daemon_stops(bundle):
    runner = Running(bundle)
    try:
        runner.wait(lambda: runner.daemon.frame_number >= 3)
        sock, stream, _, _ = open_stream(runner.port)
        assert read_parts(stream, 0.5) >= 1
        runner.daemon.stopping.set()
        started = time.monotonic()
        while stream.readline():
            assert time.monotonic() - started < 3
        sock.close()
    finally:
        runner.stop()


def test_pillow_is_imported_only_when_a_frame_is_encoded():
    code = "import sys, device.http.web, device.http.server; assert 'PIL' not in sys.modules, 'Pillow at import'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_a_missing_page_says_so_and_the_api_keeps_working(running, monkeypatch, tmp_path):
    monkeypatch.setattr(web, "KIOSK_DIR", tmp_path / "not-installed")
    code, _, body = running.get("/")
    assert code == 503 and "reinstall the device package" in json.loads(body)["error"]
    assert running.get("/static/kiosk.js")[0] == 404
    assert running.get("/status")[0] == 200
