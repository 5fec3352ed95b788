"""The Teach HTTP API, served by the daemon's HTTP server (device/http/server.py routes these paths here).

    GET  /teach, /teach/static/NAME        the Teach page and its files (device/teach/static/)
    GET  /api/dataset                      classes, counts, newest files, uncertain frames, space
    GET  /api/dataset/image?file=REL[&thumb=1]
    GET  /api/dataset/frames?label=L[&offset=N&limit=M]   one page of a class's frames, newest first
    GET  /dataset.tar                      the whole data set as one archive
    POST /api/classes {"name"}             POST /api/capture {"label"}        POST /api/dataset/delete {"file"}
    POST /api/uncertain/label {"id", "label"}   POST /api/uncertain/discard {"id"}
    POST /api/teach {"force"}              POST /api/teach/undo {}
    POST /api/dataset/move {"files", "label"}      POST /api/dataset/remove {"files"}  (at most 500 files)
    POST /api/dataset/restore {"undo"}             (the newest remove, or class delete, undone)
    POST /api/classes/rename {"name", "to"}        POST /api/classes/delete {"name"}

A bulk call answers once for all its frames, each moved or deleted by one rename (atomic per frame):
``{"moved"|"removed": [...], "failed": [{"file", "error"}]}``; a remove also gives ``"undo"``.

The server has checked the Host allow-list (a DNS-rebinding name is refused) and the token for every request
(device/http/server.py). A POST must also carry a JSON body (``Content-Type: application/json``, which a cross-site
form cannot send without a CORS preflight this server never grants) and, when the browser sends an Origin or a
Referer, come from that same host.
So no other web page open in the kiosk's browser can record, delete or retrain. Errors are JSON
``{"error": "what happened and what to do"}``, one short line, statuses from device/http/errors.py's one map.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from device.http.errors import HttpError as Refused
from device.http.errors import one_line
from device.teach.dataset import DatasetError, DatasetFull
from device.teach.service import NoFrame, RateLimited, TeachBusy, TeachFailed, TeachRefused, TeachStorage

MAX_BODY = 64 * 1024
THUMB_SIZE = 160
GET_PATHS = ("/teach", "/api/dataset", "/api/dataset/image", "/api/dataset/frames", "/dataset.tar")
GONE = ("does not exist", "is gone", "not in the ring")


def handle(request_handler, method: str, path: str, daemon) -> bool:
    """Answer PATH if it is a Teach path (True); False lets the server send its 404."""
    if getattr(daemon, "teach", None) is None:
        return False
    if method == "GET":
        if path not in GET_PATHS and not path.startswith("/teach/static/"):
            return False
        _get(request_handler, path, daemon)
        return True
    if method == "POST":
        if path not in POSTS:
            return False
        _post(request_handler, path, daemon)
        return True
    return False


def register(routes, errors) -> None:
    """Serve the Teach API and page on a daemon's HTTP server (device/http/): its paths on ROUTES, its errors'
    statuses on ERRORS. The daemon calls this when it enables teaching; device/http/ never imports teach."""
    for path in GET_PATHS + ("/teach/static/",):
        routes.register("GET", path, handle)
    for path in POSTS:
        routes.register("POST", path, handle)
    errors.register(RateLimited, 429)
    errors.register(DatasetFull, lambda error: (507, one_line(f"recording stopped: {error}")))
    errors.register(NoFrame, 503)
    errors.register((TeachBusy, TeachRefused), 409)
    errors.register(TeachStorage, 507)  # the state folder read-only, not the service's, or full: a person must act
    errors.register(TeachFailed, 500)
    errors.register(DatasetError, lambda error: (404 if any(word in str(error) for word in GONE) else 400,
                                                 one_line(str(error))))


# ---- GET --------------------------------------------------------------------------------------
def _get(request_handler, path: str, daemon) -> None:
    query = parse_qs(urlsplit(request_handler.path).query)
    service = daemon.teach
    if path == "/teach":
        return _static(request_handler, "teach.html", query)
    if path.startswith("/teach/static/"):
        return _static(request_handler, path[len("/teach/static/"):], query)
    if path == "/api/dataset":
        answer = service.describe()
        answer["keep_uncertain"] = service.dataset.keep_uncertain  # 0: the view says the ring is off
        return request_handler.send_json(200, answer)
    if path == "/api/dataset/frames":
        numbers = [(query.get(name) or ["0"])[0] for name in ("offset", "limit")]
        if not all(number.isdigit() and len(number) < 7 for number in numbers):
            raise Refused(400, "offset and limit must be whole numbers, e.g. ?label=paper&offset=0&limit=48.")
        label = (query.get("label") or [""])[0]
        return request_handler.send_json(200, service.dataset.frames(label, int(numbers[0]), int(numbers[1])))
    if path == "/api/dataset/image":
        relative = (query.get("file") or [""])[0]
        file = service.dataset.resolve_any(relative)
        body = file.read_bytes()
        if (query.get("thumb") or ["0"])[0] not in ("", "0"):
            body = _thumbnail(body)
        return request_handler.send_body(200, body, "image/jpeg")
    return _send_tar(request_handler, service.dataset.root)


def _static(request_handler, name: str, query: dict) -> None:
    """The page and its files through device/teach/web.py (content-hash links, the token passed on, the
    kiosk's Content-Security-Policy: only this daemon)."""
    from device.teach import web

    if not web.handle(request_handler, "/teach" if name == web.PAGE else web.PREFIX + name):
        raise Refused(404, f"the Teach page's file {name!r} is not installed in {web.STATIC_DIR}: update device/ "
                           "from an edgecam release that has the Teach view.")


def _thumbnail(body: bytes) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(body)) as image:
        image = image.convert("RGB")
        image.thumbnail((THUMB_SIZE, THUMB_SIZE))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=80)
        return out.getvalue()


def _send_tar(request_handler, root: Path) -> None:
    """Stream the data set (class folders, index.jsonl; not the uncertain ring) as an uncompressed tar."""
    request_handler.send_response(200)
    request_handler.send_header("Content-Type", "application/x-tar")
    request_handler.send_header("Content-Disposition", f'attachment; filename="{root.name or "dataset"}.tar"')
    request_handler.send_header("Cache-Control", "no-store")
    request_handler.send_header("Connection", "close")
    request_handler.end_headers()
    request_handler.close_connection = True
    with tarfile.open(fileobj=request_handler.wfile, mode="w|") as archive:
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            region_frame = relative.parts[:2] == (".regions", "frames") and not relative.name.startswith(".")
            if (any(part.startswith(".") for part in relative.parts) and not region_frame) or not path.is_file():
                continue
            archive.add(path, arcname=f"{root.name}/{relative.as_posix()}", recursive=False)


# ---- POST -------------------------------------------------------------------------------------
def _post(request_handler, path: str, daemon) -> None:
    check_request(request_handler, daemon)
    body = read_json(request_handler)
    code, answer = 200, POSTS[path](daemon.teach, body)
    request_handler.send_json(code, answer)


def check_request(request_handler, daemon) -> None:
    """Origin/Referer: Refused(403) when a state-changing call comes from another site's page. The Host
    allow-list and the token (with back-off) were checked by device/http/server.py (Handler.admitted) before the
    request got here, for every method."""
    host = request_handler.headers.get("Host", "")
    for header in ("Origin", "Referer"):
        value = request_handler.headers.get(header)
        if value is None:
            continue
        if urlsplit(value).netloc.lower() != host.lower():
            raise Refused(403, f"{header} {value!r} is another site than this device ({host}): only the Teach page "
                               "served by this daemon may change the data set or the model.")
        break  # the Origin decides when present


def read_json(request_handler) -> dict:
    content_type = request_handler.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise Refused(415, "send a JSON body with Content-Type: application/json.")
    try:
        length = int(request_handler.headers.get("Content-Length", "0"))
    except ValueError:
        raise Refused(400, "Content-Length is not a number.") from None
    if length < 0 or length > MAX_BODY:
        raise Refused(413, f"the JSON body is limited to {MAX_BODY} bytes.")
    raw = request_handler.read_body(length)
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Refused(400, "the body is not valid JSON (or nested too deeply): send an object such as "
                           "{\"label\": \"paper\"}.") from None
    if not isinstance(body, dict):
        raise Refused(400, "the JSON body must be an object such as {\"label\": \"paper\"}.")
    return body


def _field(body: dict, name: str, kind=str):
    value = body.get(name)
    if not isinstance(value, kind):
        raise Refused(400, f"the JSON body needs {name!r} ({kind.__name__}), e.g. {{\"{name}\": ...}}.")
    return value


def _classes(service, body):
    name = _field(body, "name")
    return {"name": service.dataset.add_class(name)}


def _capture(service, body):
    label = _field(body, "label")
    relative, count = service.capture(label)
    return {"file": relative, "count": count}


def _delete(service, body):
    relative = _field(body, "file")
    return {"deleted": service.dataset.delete(relative)}


def _label(service, body):
    identifier, label = _field(body, "id"), _field(body, "label")
    return {"file": service.dataset.label_uncertain(identifier, label)}


def _discard(service, body):
    identifier = _field(body, "id")
    return {"discarded": service.dataset.discard_uncertain(identifier)}


def _teach(service, body):
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise Refused(400, "'force' must be true or false.")
    return service.teach(force)


def _undo(service, body):
    return service.undo()


def _move(service, body):
    return service.dataset.move(_field(body, "files", list), _field(body, "label"))


def _remove(service, body):
    return service.dataset.remove(_field(body, "files", list))


def _restore(service, body):
    return service.dataset.restore(_field(body, "undo"))


def _rename_class(service, body):
    return {"name": service.dataset.rename_class(_field(body, "name"), _field(body, "to"))}


def _delete_class(service, body):
    return service.dataset.remove_class(_field(body, "name"))


POSTS = {"/api/classes": _classes, "/api/capture": _capture, "/api/dataset/delete": _delete,
         "/api/uncertain/label": _label, "/api/uncertain/discard": _discard, "/api/teach": _teach,
         "/api/teach/undo": _undo, "/api/dataset/move": _move, "/api/dataset/remove": _remove,
         "/api/dataset/restore": _restore, "/api/classes/rename": _rename_class, "/api/classes/delete": _delete_class}
