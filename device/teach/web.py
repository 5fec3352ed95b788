"""The Teach page's own files: ``/teach`` and ``/teach/static/NAME`` (device/teach/static/).

device/teach/http.py calls ``handle(request_handler, path) -> bool`` after it checked the token, the same way
device/http/web.py serves the kiosk: the page's ``/teach/static/`` links are stamped with each file's content hash
(cached for good; the token travels as the cookie device/http/guard.py sets, never in a link); only files directly
inside device/teach/static/ are served (no sub-folders, no dot-files, nothing percent-encoded), with the kiosk's
Content-Security-Policy (only this daemon).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from device.http.web import CONTENT_TYPES, SAFE_NAME, SECURITY_HEADERS, file_version, send, stamp_links

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE = "teach.html"
PREFIX = "/teach/static/"
STATIC_LINK = re.compile(r'(src|href)="/teach/static/([A-Za-z0-9_.-]+)"')


def handle(request_handler, path: str) -> bool:
    """Answer ``path`` if it is the Teach page or one of its files; False lets the caller send its 404."""
    query = parse_qs(urlsplit(request_handler.path).query)
    if path in ("/teach", "/teach/"):
        return send_page(request_handler, query)
    if path.startswith(PREFIX):
        return send_static(request_handler, path[len(PREFIX):], query)
    return False


def static_file(name: str) -> Path | None:
    """The file called ``name`` directly inside device/teach/static/, or None."""
    if not SAFE_NAME.fullmatch(name) or not STATIC_DIR.is_dir():
        return None
    return STATIC_DIR / name if name in {p.name for p in STATIC_DIR.iterdir() if p.is_file()} else None


def render_page(template: str) -> str:
    """teach.html with every ``/teach/static/NAME`` link stamped ``?v=HASH``."""
    return stamp_links(template, STATIC_LINK, PREFIX, static_file)


def send_page(request_handler, query: dict) -> bool:
    if static_file(PAGE) is None:
        body = (b'{"error":"the Teach page is missing from this install (device/teach/static/teach.html): '
                b'reinstall the device package; the API still works"}')
        send(request_handler, 503, body, "application/json", {"Cache-Control": "no-store"})
        return True
    body = render_page((STATIC_DIR / PAGE).read_text(encoding="utf-8")).encode("utf-8")
    send(request_handler, 200, body, CONTENT_TYPES[".html"], {"Cache-Control": "no-cache", **SECURITY_HEADERS})
    return True


def send_static(request_handler, name: str, query: dict) -> bool:
    path = static_file(name)
    if path is None or path.name == PAGE:
        return False
    body = path.read_bytes()
    version = file_version(body)
    etag = f'"{version}"'
    cache = "public, max-age=31536000, immutable" if (query.get("v") or [""])[0] == version else "no-cache"
    headers = {"Cache-Control": cache, "ETag": etag, **SECURITY_HEADERS}
    if request_handler.headers.get("If-None-Match") == etag:
        send(request_handler, 304, b"", None, headers)
    else:
        send(request_handler, 200, body, CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"), headers)
    return True
