"""``python -m device token``: the Teach view from a laptop in one step.

Makes a strong token (``secrets.token_urlsafe(24)``: 32 characters) and prints the lines that open the HTTP
API to the LAN (``--http 0.0.0.0:8080`` in EDGECAM_ARGS, which the unit passes to the daemon, and
EDGECAM_TOKEN) and the addresses to open: ``http://<host>.local:8080/teach?token=...`` and one per IP
address of this device. With ``--write-defaults [PATH]`` (default /etc/default/edgecam) it writes those two
settings into the file itself: every other line is kept as it was (comments, EDGECAM_MQTT, EDGECAM_RUNTIME,
the other flags of EDGECAM_ARGS), the file's mode and owner too, and the new file replaces the old in one
step (written beside it, fsynced, renamed). A token already there is kept (open pages keep working) unless
``--rotate``. The service reads the file when it starts: ``sudo systemctl restart edgecam``.

On an installed Pi, ``edgecam token ...`` runs this with the same flags (as root: the file is private).
Exit codes: 0 done, 2 the file cannot be read or written (run it with sudo) or a flag is malformed.
Standard library only.
"""

from __future__ import annotations

import argparse
import secrets
import socket
import sys
from pathlib import Path

from device import exitcodes
from device.atomic import atomic_write_with
from device.envfile import assignment, unquote
from device.http.guard import MIN_TOKEN_LENGTH

PROGRAM = "python -m device token"
DEFAULTS_FILE = "/etc/default/edgecam"
LAN_HTTP = "0.0.0.0:8080"
TOKEN_BYTES = 24  # secrets.token_urlsafe(24): 32 URL-safe characters, 192 bits


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def with_http(arguments: str, http: str) -> str:
    """EDGECAM_ARGS's words with ``--http`` set to HTTP (replaced where it was, else added at the end)."""
    words = unquote(arguments).split()
    result, index, found = [], 0, False
    while index < len(words):
        word = words[index]
        if word == "--http":
            index += 2
            if not found:
                result += ["--http", http]
                found = True
            continue
        if word.startswith("--http="):
            index += 1
            if not found:
                result += ["--http", http]
                found = True
            continue
        result.append(word)
        index += 1
    if not found:
        result += ["--http", http]
    return " ".join(result)


def update_lines(text: str, token: str | None, http: str) -> tuple:
    """-> (new text, the token in it, what changed). Sets EDGECAM_TOKEN (TOKEN, else the one there if strong
    enough, else a new one) and --http in EDGECAM_ARGS; every other line stays as it was."""
    lines = text.splitlines()
    keys = {assignment(line)[0]: index for index, line in enumerate(lines) if assignment(line)[0]}
    old_token = unquote(assignment(lines[keys["EDGECAM_TOKEN"]])[1]) if "EDGECAM_TOKEN" in keys else ""
    if token is None:
        token = old_token if len(old_token) >= MIN_TOKEN_LENGTH else new_token()
    old_arguments = assignment(lines[keys["EDGECAM_ARGS"]])[1] if "EDGECAM_ARGS" in keys else ""
    arguments = with_http(old_arguments, http)
    changed = []
    settings = {"EDGECAM_ARGS": f'"{arguments}"', "EDGECAM_TOKEN": token}
    for key, value in settings.items():
        line = f"{key}={value}"
        if key in keys:
            if lines[keys[key]].strip() != line:
                lines[keys[key]] = line
                changed.append(key)
        else:
            lines.append(line)
            changed.append(key)
    return "\n".join(lines) + "\n", token, changed


def write_atomically(path: Path, text: str) -> None:
    """TEXT replaces PATH in one step (device/atomic.py), with PATH's mode and owner (0600 root for a new file: it
    holds a token)."""
    try:
        info = path.stat()
        mode, owner = info.st_mode & 0o7777, (info.st_uid, info.st_gid)
    except FileNotFoundError:
        mode, owner = 0o600, None
    data = text.encode("utf-8")
    atomic_write_with(path, lambda stream: stream.write(data), mode, owner)


def addresses() -> list:
    """This device's IPv4 addresses a laptop on the LAN may reach (the one with the default route first)."""
    found = []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: only the route is looked up
            found.append(probe.getsockname()[0])
    except OSError:
        pass
    try:
        for *_, address in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.append(address[0])
    except OSError:
        pass
    return [address for index, address in enumerate(found)
            if address not in found[:index] and not address.startswith("127.") and address != "0.0.0.0"]


def urls(http: str, token: str, hostname: str | None = None, ips: list | None = None) -> list:
    """The Teach view's addresses for HTTP (HOST:PORT): the host's .local name and each IP, with the token."""
    host, _, port = http.rpartition(":")
    host = host.strip("[]")
    name = (hostname or socket.gethostname()).split(".")[0]
    if host in ("0.0.0.0", "::", ""):
        hosts = [f"{name}.local", *(addresses() if ips is None else ips)]
    else:
        hosts = [f"[{host}]" if ":" in host else host]
    return [f"http://{each}:{port}/teach?token={token}" for each in hosts]


def check_http(text: str) -> str:
    host, separator, port = text.rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536 or " " in text:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT such as {LAN_HTTP}, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description="Make a token for the HTTP API and print the Teach view's address for a laptop; "
                                  "with --write-defaults, also write the LAN settings into the service's file.")
    add = parser.add_argument
    add("--write-defaults", nargs="?", const=DEFAULTS_FILE, default=None, metavar="PATH",
        help=f"write EDGECAM_TOKEN and --http (in EDGECAM_ARGS) into this file, keeping its other lines "
             f"(PATH default: {DEFAULTS_FILE}; without the flag nothing is written)")
    add("--http", type=check_http, default=LAN_HTTP,
        help="HOST:PORT the daemon listens on; 0.0.0.0 is every interface (default: %(default)s)")
    add("--rotate", action="store_true", default=False,
        help="replace a token already in the file (pages opened with the old one must be opened again)")
    return parser


def main(argv: list | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.write_defaults is None:
        token = new_token()
        print("Put these lines into /etc/default/edgecam (or run this again with --write-defaults), then "
              "restart the service (sudo systemctl restart edgecam):")
        print(f'  EDGECAM_ARGS="{with_http("", args.http)}"   (keep the other flags you have there)')
        print(f"  EDGECAM_TOKEN={token}")
    else:
        path = Path(args.write_defaults)
        try:
            text = path.read_text(encoding="utf-8") if path.exists() else ""
            text, token, changed = update_lines(text, new_token() if args.rotate else None, args.http)
            if changed:
                write_atomically(path, text)
        except OSError as error:
            return exitcodes.fail("edgecam token", exitcodes.describe(error, str(path)) +
                                  " (the file is the service's and private: run it with sudo)", exitcodes.BAD_INPUT)
        what = ", ".join(changed) if changed else "nothing (both settings were already there)"
        print(f"{path}: set {what}; its other lines are kept.")
        if changed:
            print("Restart the service to use them: sudo systemctl restart edgecam")
    print("Open the Teach view on a laptop in the same network:")
    for url in urls(args.http, token):
        print(f"  {url}")
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
