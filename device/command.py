"""``edgecam COMMAND``: the device's own command, installed by install.sh as /usr/local/bin/edgecam.

It runs the CURRENT release (PREFIX/current) the way the service does: as the service's user, with the
service's state folder (/var/lib/edgecam: the data set and the taught heads) and settings (/etc/default/edgecam),
so what a person does over ssh lands where the service looks:

    edgecam status            which head serves (python -m device status)
    edgecam teach [--force]   fit a new head on the recorded frames; the running service switches to it
    edgecam undo              go back one head; the running service switches back
    edgecam capture --label L [--count N] [--interval S]
                              record frames: through the running service's Teach API when it holds the
                              camera, else straight from the service's --source
    edgecam doctor            check this device as the service's user sees it
    edgecam tune              measure the fastest model format here (kept in the state folder)
    edgecam logs [-f]         journalctl -u edgecam
    edgecam token ...         python -m device token ... (a token for the Teach view from a laptop)
    edgecam url               the Teach view's address (with ?token= when the service has one)

Not root: it asks sudo once (Raspberry Pi OS's first user may), as /etc/default/edgecam is private (the token).
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from device import exitcodes
from device.envfile import parse_assignments

PROGRAM = "edgecam"
UNIT = "edgecam.service"
DEFAULT_HTTP = "127.0.0.1:8080"  # the daemon's --http default (device/cli.py)
AS_SERVICE_USER = ("status", "teach", "undo", "doctor", "tune")
RATE_RETRIES, RATE_WAIT_S = 20, 0.25  # a frame the service refused as too soon is asked again, up to 5 s


class Setup:
    """Where the installed device keeps things (install.sh's defaults, overridden by its shim's flags)."""

    def __init__(self, args):
        self.prefix = Path(args.prefix)
        self.user = args.user
        self.env_file = Path(args.env_file)
        self.state_dir = Path(args.state_dir)
        self.log_dir = Path(args.log_dir)
        self.release = self.prefix / "current"
        self.python = self.release / "venv" / "bin" / "python"
        self.bundle = self.release / "bundle"
        self.dataset = self.state_dir / "dataset"

    def settings(self) -> dict:
        """/etc/default/edgecam's assignments (EDGECAM_ARGS, EDGECAM_TOKEN, EDGECAM_RUNTIME, ...)."""
        try:
            return parse_assignments(self.env_file.read_text())
        except FileNotFoundError:
            return {}


def service_flag(settings: dict, flag: str, default: str | None = None) -> str | None:
    """The value of FLAG (``--http``, ``--source``) in the service's EDGECAM_ARGS, else DEFAULT."""
    words = shlex.split(settings.get("EDGECAM_ARGS", ""))
    for index, word in enumerate(words):
        if word == flag and index + 1 < len(words):
            return words[index + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return default


def http_address(settings: dict) -> tuple:
    """-> (host, port) the service listens on, or (None, None) with --http off: --http in EDGECAM_ARGS, else
    EDGECAM_HTTP (the daemon's default for --http), else the daemon's own default."""
    value = service_flag(settings, "--http", settings.get("EDGECAM_HTTP") or DEFAULT_HTTP)
    if value == "off":
        return None, None
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def service_active() -> bool:
    return subprocess.run(["systemctl", "is-active", "--quiet", UNIT], check=False).returncode == 0


def as_service_user(setup: Setup, settings: dict, command: list) -> list:
    """COMMAND run as the service's user, in the state folder, with the service's variables."""
    variables = {key: value for key, value in settings.items() if key.startswith("EDGECAM_")}
    variables.update(EDGECAM_STATE_DIR=str(setup.state_dir), HOME=str(setup.state_dir),
                     PATH=os.environ.get("PATH", "/usr/bin:/bin"), LANG=os.environ.get("LANG", "C.UTF-8"))
    variables.pop("EDGECAM_ARGS", None)  # the daemon's flags, not the commands'
    variables.pop("EDGECAM_HTTP", None)
    return ["runuser", "-u", setup.user, "--", "env", "-i", *(f"{key}={value}" for key, value in variables.items()),
            *command]


def device_command(setup: Setup, name: str, rest: list) -> list:
    """``python -m device NAME`` with the installed bundle and the state folder's paths."""
    extra = {"teach": ["--data", str(setup.dataset)], "doctor": ["--log-dir", str(setup.log_dir)],
             "tune": ["--state-dir", str(setup.state_dir)]}.get(name, [])
    return [str(setup.python), "-m", "device", name, "--bundle", str(setup.bundle), *extra, *rest]


def run_as_service_user(setup: Setup, name: str, rest: list) -> int:
    settings = setup.settings()
    # A new head (teach, undo) lands in the state folder, where the running service picks it up by itself.
    return subprocess.run(as_service_user(setup, settings, device_command(setup, name, rest)),
                          cwd=setup.state_dir, check=False).returncode


# ---- capture -------------------------------------------------------------------------------------
def capture_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"{PROGRAM} capture", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description="Record labelled frames into the service's data set: through the "
                                                 "running service's Teach API when it holds the camera, else from "
                                                 "the service's --source.")
    parser.add_argument("--label", required=True, help="class to record (1-40 letters, digits, - or _)")
    parser.add_argument("--count", type=int, default=20, help="frames to record")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between frames")
    return parser


def api(settings: dict, method: str, path: str, body: dict | None = None) -> tuple:
    """-> (HTTP status, parsed JSON) from the running service's API on this device."""
    host, port = http_address(settings)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if settings.get("EDGECAM_TOKEN"):
        headers["Authorization"] = f"Bearer {settings['EDGECAM_TOKEN']}"
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}{path}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw)
        except ValueError:
            return error.code, raw.decode("utf-8", "replace")


def capture_through_service(settings: dict, label: str, count: int, interval: float) -> int:
    if http_address(settings)[0] is None:
        return exitcodes.fail(PROGRAM, "the service runs with --http off, so it cannot record for you: stop it "
                              "(sudo systemctl stop edgecam) and run edgecam capture again.", exitcodes.BAD_INPUT)
    try:
        status, answer = api(settings, "GET", "/api/dataset")
        if status != 200:
            raise RuntimeError(f"GET /api/dataset answered {status}: {answer}")
        names = [entry.get("name") if isinstance(entry, dict) else entry for entry in answer.get("classes", [])]
        if label not in names:
            status, answer = api(settings, "POST", "/api/classes", {"name": label})
            if status != 200:
                return exitcodes.fail(PROGRAM, f"the service refused class {label!r}: {answer}", exitcodes.BAD_INPUT)
        for number in range(count):
            if number:
                time.sleep(interval)
            status, answer = api(settings, "POST", "/api/capture", {"label": label})
            for _ in range(RATE_RETRIES):  # 429: faster than the service's --capture-fps (e.g. a capture just before)
                if status != 429:
                    break
                time.sleep(RATE_WAIT_S)
                status, answer = api(settings, "POST", "/api/capture", {"label": label})
            if status != 200:
                code = exitcodes.RETRY if status in (429, 503) else exitcodes.BAD_INPUT
                return exitcodes.fail(PROGRAM, f"the service did not record frame {number + 1} ({status}: "
                                      f"{answer}); {number} recorded.", code)
            print(json.dumps(answer), flush=True)
    except (OSError, RuntimeError) as error:
        return exitcodes.fail(PROGRAM, f"the running service's Teach API did not answer ({error}); check "
                              "edgecam logs, or stop the service and capture directly.", exitcodes.RETRY)
    print(f"{PROGRAM}: recorded {count} frames of {label} through the running service", file=sys.stderr)
    return exitcodes.OK


def capture(setup: Setup, rest: list) -> int:
    args = capture_parser().parse_args(rest)
    settings = setup.settings()
    if service_active():  # it holds the camera: ask it
        return capture_through_service(settings, args.label, args.count, args.interval)
    source = service_flag(settings, "--source", "picamera2")
    command = [str(setup.python), "-m", "device", "capture", "--bundle", str(setup.bundle), "--dataset",
               str(setup.dataset), "--source", source, "--label", args.label, "--count", str(args.count),
               "--interval", str(args.interval)]
    return subprocess.run(as_service_user(setup, settings, command), cwd=setup.state_dir, check=False).returncode


# ---- url, logs, token ----------------------------------------------------------------------------
def urls(settings: dict) -> list:
    """The Teach view's addresses: this device's own on loopback, its host names on the LAN."""
    host, port = http_address(settings)
    if host is None:
        return []
    query = f"?token={settings['EDGECAM_TOKEN']}" if settings.get("EDGECAM_TOKEN") else ""
    if host in ("0.0.0.0", "::"):
        name = socket.gethostname()
        hosts = [f"{name}.local", name]
    else:
        hosts = [f"[{host}]" if ":" in host else host]
    return [f"http://{each}:{port}/teach{query}" for each in hosts]


def url(setup: Setup) -> int:
    settings = setup.settings()
    found = urls(settings)
    if not found:
        return exitcodes.fail(PROGRAM, f"the service runs with --http off ({setup.env_file}): set --http in "
                              "EDGECAM_ARGS, then sudo systemctl restart edgecam.", exitcodes.BAD_INPUT)
    print("\n".join(found))
    host, _ = http_address(settings)
    if host.startswith("127.") or host == "::1":
        print(f"{PROGRAM}: the service listens on this device only; for a laptop: edgecam token --help "
              "(it writes the LAN lines of /etc/default/edgecam)", file=sys.stderr)
    return exitcodes.OK


# ---- the command line ----------------------------------------------------------------------------
COMMANDS = ("status", "teach", "undo", "capture", "doctor", "tune", "logs", "token", "url")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description=__doc__.split("\n\n", 1)[1].rsplit("\n\n", 1)[0],
                                     epilog="Each command's own flags: edgecam COMMAND --help.")
    add = parser.add_argument
    add("--prefix", default="/opt/edgecam", help="install folder (default: %(default)s)")
    add("--user", default="edgecam", help="the service's user (default: %(default)s)")
    add("--env-file", default="/etc/default/edgecam", help="the service's settings (default: %(default)s)")
    add("--state-dir", default="/var/lib/edgecam", help="the service's state folder (default: %(default)s)")
    add("--log-dir", default="/var/log/edgecam", help="the service's log folder (default: %(default)s)")
    add("command", choices=COMMANDS, metavar="COMMAND", help=f"one of: {', '.join(COMMANDS)}")
    add("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def as_root(argv: list) -> int | None:
    """Not root: run this same command again through sudo (-> its exit code), or None when already root."""
    if os.geteuid() == 0:
        return None
    if shutil.which("sudo") is None:
        return exitcodes.fail(PROGRAM, "needs root (the service's settings are private) and sudo is not "
                              "installed: run it as root.", exitcodes.BAD_INPUT)
    return subprocess.run(["sudo", "--", sys.executable, "-m", "device.command", *argv], check=False).returncode


def main(argv: list | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    elevated = as_root(argv)
    if elevated is not None:
        return elevated
    setup = Setup(args)
    if not setup.python.is_file():
        return exitcodes.fail(PROGRAM, f"no installed release in {setup.prefix} ({setup.python} is missing): "
                              "install one with the device archive's install.sh.", exitcodes.BAD_INPUT)
    if args.command in AS_SERVICE_USER:
        return run_as_service_user(setup, args.command, args.rest)
    if args.command == "capture":
        return capture(setup, args.rest)
    if args.command == "logs":
        return subprocess.run(["journalctl", "-u", UNIT, *args.rest], check=False).returncode
    if args.command == "token":  # the LAN token helper (device/token.py, from the outputs branch)
        return subprocess.run([str(setup.python), "-m", "device", "token", *args.rest], check=False).returncode
    return url(setup)


if __name__ == "__main__":
    sys.exit(exitcodes.run(main, program=PROGRAM))
