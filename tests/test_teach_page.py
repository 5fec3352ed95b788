"""device/teach/web.py: the Teach page and its files over real HTTP (a standard-library server on a loopback
port whose handler calls it, as device/teach/http.py does), read with http.client so that traversal attempts
reach the server unnormalised. Also: it stays lean, and the page asks for nothing beyond the daemon."""

import http.client
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from test_device_lean import FORBIDDEN

from device.teach import web

REPO = Path(__file__).resolve().parent.parent


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if not web.handle(self, urlsplit(self.path).path):
            body = b'{"error":"not found"}'
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def get(port, path, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def test_the_page_links_its_files_by_content_hash_and_never_a_token(server):
    status, headers, body = get(server, "/teach")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    links = re.findall(r'(?:src|href)="(/teach/static/[^"]+)"', body.decode())
    assert [link.split("?")[0] for link in links] == ["/teach/static/teach.css"] + [
        f"/teach/static/{name}.js" for name in ("teach-core", "teach-capture", "teach-grid", "teach-uncertain",
                                                 "teach-head", "teach", "regions")]  # in the order they run
    for link in links:
        assert re.search(r"\?v=[0-9a-f]{16}$", link), link
        status, headers, _ = get(server, link)
        assert status == 200 and headers["Cache-Control"] == "public, max-age=31536000, immutable"
        status, _, _ = get(server, link, {"If-None-Match": headers["ETag"]})
        assert status == 304
    _, _, with_token = get(server, "/teach?token=s3cr%26t")  # the daemon's cookie carries it (test_kiosk_web)
    assert "s3cr" not in with_token.decode() and with_token.decode().count("?v=") == len(links)


@pytest.mark.parametrize("path", ["/teach/static/../web.py", "/teach/static/%2e%2e/web.py", "/teach/static/.hidden",
                                  "/teach/static/teach.html", "/teach/static/", "/teach/static/nothing.js",
                                  "/teach/static//etc/passwd", "/teachx"])
def test_nothing_but_the_pages_own_files(server, path):
    status, _, body = get(server, path)
    assert status == 404, (path, body[:80])


def test_the_page_asks_for_nothing_beyond_the_daemon():
    for path in web.STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.IGNORECASE), path.name
        assert "@import" not in text and "fonts." not in text, path.name


def test_importing_it_stays_lean():
    code = "import sys, device.teach.web; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    output = subprocess.run([sys.executable, "-c", "import json; " + code], cwd=REPO, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), check=True).stdout
    modules = set(json.loads(output))
    assert not modules & set(FORBIDDEN + ("PIL", "cv2", "ai_edge_litert")), sorted(modules)
