"""The Teach API for regions (docs/regions.md), served beside device/teach/http.py's paths:

    GET  /api/regions                       the regions served: box, settings, labels, head, frames per label
    GET  /api/regions/crop?region=NAME      the newest camera frame's crop of that region (JPEG)
    GET  /api/regions/frame                 the newest camera frame, whole (JPEG: the Teach view draws boxes on it)
    POST /api/regions {"regions": [{"name", "box": [X, Y, W, H], "smoothing"?, "threshold"?, "repeat"?}]}
                                            save STATE/regions.json (the daemon reads it within a second)
    POST /api/regions/capture {"region", "label"}     record the whole frame with LABEL for that region
    POST /api/regions/teach {"region", "force"?}      teach that region's head (python -m device teach --region)
    POST /api/regions/undo {"region"}                 back one revision of that region's head

The same checks as every Teach call: the token and Host (device/http/server.py), and for a POST a JSON body from
this same site (device/teach/http.py check_request, read_json). Errors: {"error"} with device/http/errors.py's
statuses.
"""

from __future__ import annotations

import io

from device.http.errors import HttpError as Refused

GETS = ("/api/regions", "/api/regions/crop", "/api/regions/frame")


def register(routes) -> None:
    """Serve /api/regions* on a daemon's HTTP server (device/http/routes.py), beside the Teach API (the daemon calls
    this with device/teach/http.py's register)."""
    for path in GETS:
        routes.register("GET", path, handle)
    for path in POSTS:
        routes.register("POST", path, handle)


def handle(request_handler, method: str, path: str, daemon) -> bool:
    if getattr(daemon, "teach", None) is None or not path.startswith("/api/regions"):
        return False
    if method == "GET" and path in GETS:
        _get(request_handler, path, daemon)
        return True
    if method == "POST" and path in POSTS:
        from device.teach.http import check_request, read_json

        check_request(request_handler, daemon)
        body = read_json(request_handler)
        request_handler.send_json(200, POSTS[path](daemon, body))
        return True
    return False


def _regions(daemon):
    regions = getattr(daemon, "regions", None)
    return regions if regions is not None else None


def _find(daemon, body_or_name):
    from device.regions import check_name

    name = body_or_name.get("region") if isinstance(body_or_name, dict) else body_or_name
    if not isinstance(name, str):
        raise Refused(400, "the JSON body needs \"region\": a region's name, e.g. {\"region\": \"door\"}.")
    try:
        check_name(name)
    except ValueError as error:
        raise Refused(400, str(error)) from None
    regions = _regions(daemon)
    for region in regions.regions if regions is not None else ():
        if region.name == name:
            return region
    known = ", ".join(r.name for r in regions.regions) if regions is not None and regions.regions else "none"
    raise Refused(404, f"no region {name!r} on this device (it has: {known}): add it with POST /api/regions.")


def _get(request_handler, path: str, daemon) -> None:
    from urllib.parse import parse_qs, urlsplit

    if path == "/api/regions":
        from device.teach import regionlabels

        regions = _regions(daemon)
        described = regions.describe() if regions is not None else []
        root = daemon.teach.dataset.root
        for entry in described:
            entry["frames"] = regionlabels.counts(root, entry["name"])
        return request_handler.send_json(200, {"regions": described, "origin": regions.origin if regions else None})
    frame = daemon.latest_frame()
    if path == "/api/regions/crop":
        frame = _find(daemon, (parse_qs(urlsplit(request_handler.path).query).get("region") or [""])[0]).crop(
            frame) if frame is not None else None
    if frame is None:
        raise Refused(503, "no camera frame yet: wait for the camera to start (see /status source).")
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="JPEG", quality=85)
    request_handler.send_body(200, out.getvalue(), "image/jpeg")


def _save(daemon, body):
    from device.regions import RegionError, from_mapping, save_state

    regions = _regions(daemon)
    if regions is not None and regions.origin == "flags":
        raise Refused(409, "this daemon's regions come from its --region flags: remove them from its command line "
                           "(or the unit) to set regions here.")
    if daemon.state_dir is None:
        raise Refused(409, "regions are kept in the state folder: start the daemon with --state-dir DIR.")
    try:
        parsed = from_mapping({"regions": body.get("regions")}, "POST /api/regions")
        save_state(daemon.state_dir, parsed)
    except RegionError as error:
        raise Refused(400, str(error)) from None
    return {"regions": [region.describe() for region in parsed]}


def _capture(daemon, body):
    from device.teach import regionlabels
    from device.teach.dataset import check_class_name

    region, label = _find(daemon, body), body.get("label")
    check_class_name(label)
    frame = daemon.frame_to_record()
    if frame is None:
        raise Refused(503, "no camera frame yet: wait for the camera to start (see /status source).")
    service = daemon.teach
    relative = regionlabels.save(service.dataset, frame, {region.name: label}, {region.name: region.box},
                                 daemon.options.source)
    return {"file": relative, "region": region.name, "count": regionlabels.counts(service.dataset.root,
                                                                               region.name).get(label, 0)}


def _teach(daemon, body):
    from device.teach.service import TeachBusy

    region, force = _find(daemon, body), body.get("force", False)
    if not isinstance(force, bool):
        raise Refused(400, "'force' must be true or false.")
    service = daemon.teach
    if not service.lock.acquire(blocking=False):
        raise TeachBusy("teaching is already running: wait for it to finish.")
    try:
        return service._run_teach(["--data", str(service.dataset.root), "--region", region.spec()]
                                  + (["--force"] if force else []))
    finally:
        service.lock.release()  # the daemon sees the region's new revision within a second (regionserve.py)


def _undo(daemon, body):
    from device.heads import store as revisions
    from device.regions.serve import open_region_store
    from device.teach.service import TeachBusy, TeachRefused

    region = _find(daemon, body)
    classifier = daemon.classifier
    service = daemon.teach
    if not service.lock.acquire(blocking=False):
        raise TeachBusy("teaching is running: undo when it has finished.")
    try:
        store = open_region_store(daemon.options.bundle, classifier.manifest, classifier.model.format or "",
                                  daemon.state_dir, classifier.model.sha256, region.name)
        try:
            revision = store.undo()
        except revisions.NothingToUndo as error:
            raise TeachRefused(str(error)) from None
        except revisions.StoreLocked as error:
            raise TeachBusy(str(error)) from None
        return {"region": region.name, "revision": revision}
    finally:
        service.lock.release()


POSTS = {"/api/regions": _save, "/api/regions/capture": _capture, "/api/regions/teach": _teach,
         "/api/regions/undo": _undo}
