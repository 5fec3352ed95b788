"""Where one edgecam device stands, as JSON on stdout: run ON the device by the fleet playbook (rollout.yml).

Standard library only (the Pi's python3 runs it; nothing of edgecam needs to be importable)::

    python3 probe.py --base /opt/edgecam --http 127.0.0.1:8080 [--wait 60] [--release ID] [--token T]

It reads the ``current`` and ``previous`` release links under --base, asks the daemon's /healthz and
/status, and compares the sha256 of the model the daemon runs with the one the current release's
manifest lists for that format. With --wait it polls until the device is healthy, runs the current
release's model and (with --release) that release is current, or the time is up. It also says the host's
OS release (/etc/os-release), the free disk under --base, and the head the daemon serves (its revision,
bundle or taught, and the state of a re-fit after a new model). Always exits 0; the playbook decides from
the ``healthy`` field.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def release_of(base: Path, link: str) -> str | None:
    try:
        return os.path.basename(os.readlink(base / link))
    except OSError:
        return None


def fetch(url: str, token: str | None, timeout: float) -> tuple:
    """-> (HTTP status or None, JSON body or None, error text or None)."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null"), None
    except urllib.error.HTTPError as error:
        try:
            body = json.loads(error.read() or b"null")
        except ValueError:
            body = None
        return error.code, body, f"HTTP {error.code}"
    except (OSError, ValueError) as error:  # refused, timed out, reset, not JSON
        return None, None, str(getattr(error, "reason", None) or error)


def expected_sha256(base: Path, model_format: str | None, sha256: str | None) -> tuple:
    """-> (the sha256 the current release lists for ``model_format``, or None; the manifest's problem or None)."""
    manifest_path = base / "current" / "bundle" / "manifest.json"
    try:
        models = json.loads(manifest_path.read_text()).get("models") or {}
    except (OSError, ValueError) as error:
        return None, f"cannot read {manifest_path}: {error}"
    if model_format in models:
        return models[model_format].get("sha256"), None
    listed = {entry.get("sha256") for entry in models.values()}
    if sha256 in listed:  # a .tflite path given with --model: still one of the release's models
        return sha256, None
    return None, f"the daemon runs model {model_format!r}, which the current release does not ship " \
                 f"(it has: {', '.join(sorted(models)) or 'none'})"


def os_release(path: Path = Path("/etc/os-release")) -> str | None:
    """"Debian GNU/Linux 13 (trixie)": os-release(5)'s PRETTY_NAME, else NAME VERSION_ID, else None."""
    fields = {}
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            key, equals, value = line.partition("=")
            if equals:
                fields[key.strip()] = value.strip().strip("\"'")
    except OSError:
        return None
    return fields.get("PRETTY_NAME") or " ".join(filter(None, (fields.get("NAME"), fields.get("VERSION_ID")))) or None


def free_bytes(base: Path) -> int | None:
    """Free bytes on the file system that holds the install folder (its nearest existing parent)."""
    existing = base
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        return shutil.disk_usage(existing).free
    except OSError:
        return None


def probe_once(base: Path, http: str, token: str | None, release: str | None) -> dict:
    state = {"release": release_of(base, "current"), "previous": release_of(base, "previous"),
             "healthy": False, "reason": None, "model": None, "os": os_release(), "free_bytes": free_bytes(base)}
    if release and state["release"] != release:
        state["reason"] = f"release {release} is not current (current: {state['release'] or 'none'})"
        return state
    status, body, error = fetch(f"http://{http}/healthz", token, timeout=5)
    if status != 200:
        reason = (body or {}).get("reason") if isinstance(body, dict) else None
        state["reason"] = f"/healthz on {http}: {reason or error or status}"
        return state
    status, body, error = fetch(f"http://{http}/status", token, timeout=5)
    model = (body or {}).get("model") if isinstance(body, dict) else None
    if status != 200 or not model:
        state["reason"] = f"/status on {http}: {error or 'no model loaded'}"
        return state
    state["model"] = {key: model.get(key) for key in ("format", "sha256", "runtime")}
    state["tuning"] = body.get("tuning")  # device/tune.py: the format and threads it serves, and why
    head = body.get("head") if isinstance(body.get("head"), dict) else {}
    refit = head.get("refit") if isinstance(head.get("refit"), dict) else {}
    state["head"] = {"revision": head.get("revision"), "source": head.get("source"), "refit": refit.get("state"),
                     "refit_reason": refit.get("reason")}  # a taught head, and its re-fit after a new model
    state["daemon"] = {"release": body.get("release"), "started_at": body.get("started_at")}
    if body.get("regions"):  # docs/regions.md: each region's box and the head revision it is read with
        state["regions"] = [{"name": region.get("name"), "box": region.get("box"),
                             "revision": (region.get("head") or {}).get("revision")} for region in body["regions"]]
    expected, problem = expected_sha256(base, model.get("format"), model.get("sha256"))
    if problem:
        state["reason"] = problem
    elif expected != model.get("sha256"):
        state["reason"] = (f"the daemon's {model.get('format')} model has sha256 {str(model.get('sha256'))[:12]}, "
                           f"the current release's has {str(expected)[:12]} (an old daemon still running?)")
    else:
        state["reason"] = stale_daemon(base, state["release"], body)
        state["healthy"] = state["reason"] is None
    return state


def stale_daemon(base: Path, current: str | None, status: dict) -> str | None:
    """Why the answering daemon is not one started for the current release (a code-only release has the same
    model sha256), or None. The release id it reports (daemons from 2026-12 on) decides; for older daemons,
    a start earlier than the moment ``current`` was switched."""
    running = status.get("release")
    if running and current and running != current:
        return f"the daemon runs release {running}, the current release is {current}: it was not restarted"
    started = status.get("started_at")
    if started is None and isinstance(status.get("uptime_s"), (int, float)):
        started = time.time() - status["uptime_s"]
    try:
        switched = os.lstat(base / "current").st_mtime
    except OSError:
        return None
    if running is None and isinstance(started, (int, float)) and started < switched - 0.5:
        return (f"the daemon started {switched - started:.0f} s before release {current} became current: "
                "it was not restarted")
    return None


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="probe.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--base", required=True, help="the install folder: ROOT + PREFIX (e.g. /opt/edgecam)")
    parser.add_argument("--http", default="127.0.0.1:8080", help="HOST:PORT of the daemon's HTTP API")
    parser.add_argument("--token", default="", help="bearer token of the HTTP API, if it has one")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to keep polling until healthy")
    parser.add_argument("--release", default="", help="release id that must be current")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.wait
    while True:
        state = probe_once(Path(args.base), args.http, args.token or None, args.release or None)
        if state["healthy"] or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if not state["healthy"] and args.wait:
        state["reason"] = f"{state['reason']} (after {args.wait:g} s)"
    print(json.dumps(state, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
