"""The kiosk: a full-screen local page served by the daemon itself (standard library; Pillow for JPEG only).

device/http/server.py hands every path that is not its own API to ``handle(request_handler, path, daemon)``,
after it checked the token. This module answers:

- ``/`` (and ``/index.html``): device/kiosk/index.html. Its ``/static/`` links are stamped with each file's
  content hash (so they can be cached for good). A daemon that requires a token serves the page opened with
  ``?token=`` and sets it as a same-site cookie (device/http/guard.py), which the page's own requests carry.
- ``/static/NAME``: a file directly inside device/kiosk/ whose name is listed there; sub-folders,
  dot-files, ``..`` and anything percent-encoded simply do not match, so there is no traversal.
- ``/frame.jpg``: the newest camera frame as a JPEG (503 until the first frame arrives).
- ``/stream.mjpg``: the same as an MJPEG stream (multipart/x-mixed-replace), at most ``STREAM_MAX_FPS``
  frames a second, encoded in that viewer's own request thread only while it stays connected.

Nothing here runs in the inference loop: a frame is JPEG-encoded only when a viewer asks for one, each new
frame at most once per viewer, and Pillow releases the GIL while it encodes. Nothing is loaded from the
internet: the page's Content-Security-Policy allows only this daemon (``'self'``).
"""

from __future__ import annotations

import hashlib
import html
import io
import re
import select
import socket
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

KIOSK_DIR = Path(__file__).resolve().parent.parent / "kiosk"
STREAM_MAX_FPS = 8.0
JPEG_QUALITY = 80
WRITE_TIMEOUT_S = 10.0  # a viewer that stops reading is dropped instead of holding a thread forever
BOUNDARY = "edgecamframe"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
STATIC_LINK = re.compile(r'(src|href)="/static/([A-Za-z0-9_.-]+)"')
SECURITY_HEADERS = {
    # Only this daemon: no CDN, no web font, no analytics can load even if someone adds a link by mistake.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def handle(request_handler, path: str, daemon) -> bool:
    """Answer ``path`` if it is one of the kiosk's; False lets the server send its 404."""
    query = parse_qs(urlsplit(request_handler.path).query)
    if path in ("/", "/index.html"):
        send_page(request_handler, query)
    elif path.startswith("/static/"):
        return send_static(request_handler, path[len("/static/"):], query)
    elif path == "/frame.jpg":
        send_frame(request_handler, daemon)
    elif path == "/stream.mjpg":
        send_stream(request_handler, daemon)
    else:
        return False
    return True


# ---- the page and its files -----------------------------------------------------------------
def kiosk_file(name: str) -> Path | None:
    """The file called ``name`` directly inside device/kiosk/, or None (no sub-folders, no dot-files)."""
    if not SAFE_NAME.fullmatch(name) or not KIOSK_DIR.is_dir():
        return None
    candidate = KIOSK_DIR / name
    return candidate if name in {p.name for p in KIOSK_DIR.iterdir() if p.is_file()} else None


def file_version(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


def render_page(template: str) -> str:
    """index.html with every ``/static/NAME`` link stamped ``?v=HASH``."""
    return stamp_links(template, STATIC_LINK, "/static/", kiosk_file)


def stamp_links(template: str, pattern: re.Pattern, prefix: str, find) -> str:
    """Every ``PREFIX NAME`` link that PATTERN matches gets ``?v=HASH`` of FIND(NAME)'s content (so it can be
    cached for good); never a token (the cookie carries it). Shared by the kiosk and the Teach view."""

    def stamp(match: re.Match) -> str:
        path = find(match.group(2))
        version = file_version(path.read_bytes()) if path else "missing"
        return f'{match.group(1)}="{prefix}{match.group(2)}?{html.escape(f"v={version}")}"'

    return pattern.sub(stamp, template)


def send_page(request_handler, query: dict) -> None:
    if kiosk_file("index.html") is None:
        body = (b'{"error":"the kiosk page is missing from this install (device/kiosk/index.html): '
                b'reinstall the device package; the API still works"}')
        send(request_handler, 503, body, "application/json", {"Cache-Control": "no-store"})
        return
    body = render_page((KIOSK_DIR / "index.html").read_text(encoding="utf-8")).encode("utf-8")
    headers = {"Cache-Control": "no-cache", **SECURITY_HEADERS}
    send(request_handler, 200, body, CONTENT_TYPES[".html"], headers)


def send_static(request_handler, name: str, query: dict) -> bool:
    path = kiosk_file(name)
    if path is None or path.name == "index.html":
        return False
    body = path.read_bytes()
    version = file_version(body)
    etag = f'"{version}"'
    # A link stamped with this very content can be cached for good; anything else revalidates.
    cache = ("public, max-age=31536000, immutable" if (query.get("v") or [""])[0] == version else "no-cache")
    headers = {"Cache-Control": cache, "ETag": etag, **SECURITY_HEADERS}
    if request_handler.headers.get("If-None-Match") == etag:
        send(request_handler, 304, b"", None, headers)
    else:
        send(request_handler, 200, body, CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"),
             headers)
    return True


def send(request_handler, code: int, body: bytes, content_type: str | None, headers: dict) -> None:
    request_handler.send_response(code)
    if content_type:
        request_handler.send_header("Content-Type", content_type)
    if code != 304:  # a 304 has no body by definition: no length to announce
        request_handler.send_header("Content-Length", str(len(body)))
    for key, value in headers.items():
        request_handler.send_header(key, value)
    request_handler.end_headers()
    if body:
        request_handler.wfile.write(body)


# ---- the live view ----------------------------------------------------------------------------
def encode_jpeg(frame, quality: int = JPEG_QUALITY) -> bytes:
    """RGB uint8 HxWx3 -> JPEG bytes. Pillow is imported here, on the first viewer, never at daemon start."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def latest_frame(daemon):
    getter = getattr(daemon, "latest_frame", None)
    return getter() if callable(getter) else None


def send_frame(request_handler, daemon) -> None:
    frame = latest_frame(daemon)
    if frame is None:
        body = b'{"error":"no camera frame yet: the source is starting or degraded (see /status)"}'
        headers = {"Cache-Control": "no-store", "Retry-After": "1"}
        send(request_handler, 503, body, "application/json", headers)
        return
    send(request_handler, 200, encode_jpeg(frame), "image/jpeg", {"Cache-Control": "no-store"})


def client_gone(connection) -> bool:
    """True when the viewer closed its end (readable with nothing to read), without sending it anything."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def send_stream(request_handler, daemon, max_fps: float = STREAM_MAX_FPS) -> None:
    """MJPEG until the viewer goes or the daemon stops; a frame is encoded only when it is new."""
    request_handler.close_connection = True
    request_handler.send_response(200)
    request_handler.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
    request_handler.send_header("Cache-Control", "no-store")
    request_handler.send_header("Connection", "close")
    request_handler.end_headers()
    request_handler.connection.settimeout(WRITE_TIMEOUT_S)
    stopping = getattr(daemon, "stopping", None)
    interval = 1.0 / max_fps
    sent = None
    try:
        while not (stopping is not None and stopping.is_set()):
            started = time.monotonic()
            frame = latest_frame(daemon)
            if frame is not None and frame is not sent:
                jpeg = encode_jpeg(frame)
                part = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                request_handler.wfile.write(part.encode() + jpeg + b"\r\n")
                request_handler.wfile.flush()
                sent = frame
            elif client_gone(request_handler.connection):
                return
            pause = max(0.0, interval - (time.monotonic() - started))
            if stopping is not None:
                stopping.wait(pause)
            else:
                time.sleep(pause)
    except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
        return  # the viewer went away: stop encoding for it
