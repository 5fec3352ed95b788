"""Which operating system release this device runs: /etc/os-release (PRETTY_NAME, VERSION_CODENAME) and, on a
Raspberry Pi, the board's model from the device tree. ``device doctor`` names both; the releases the device
requirements are made for (deploy/requirements-pi.txt) are TESTED_RELEASES. Standard library only."""

from __future__ import annotations

from pathlib import Path

from device.envfile import parse_assignments

OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")  # os-release(5): the first that exists
BOARD_MODEL_PATH = "/proc/device-tree/model"
# VERSION_CODENAME -> what the device requirements and the systemd test bed cover there
TESTED_RELEASES = {"trixie": "Python 3.13, apt's NumPy 2.2, ai-edge-litert",
                   "bookworm": "Python 3.11, apt's NumPy 1.24, ai-edge-litert or tflite-runtime"}


def os_release(paths=OS_RELEASE_PATHS) -> dict:
    """-> {"pretty_name", "id", "version_id", "codename", "path"}; empty strings where nothing says."""
    for path in paths:
        try:
            fields = parse_assignments(Path(path).read_text(errors="replace"))
        except OSError:
            continue
        codename = fields.get("VERSION_CODENAME") or fields.get("DEBIAN_CODENAME") or ""
        return {"pretty_name": fields.get("PRETTY_NAME") or fields.get("NAME") or "", "id": fields.get("ID", ""),
                "version_id": fields.get("VERSION_ID", ""), "codename": codename, "path": str(path)}
    return {"pretty_name": "", "id": "", "version_id": "", "codename": "", "path": None}


def board_model(path: str = BOARD_MODEL_PATH) -> str:
    """The Raspberry Pi's model ("Raspberry Pi 5 Model B Rev 1.0"), or "" where there is no device tree."""
    try:
        return Path(path).read_bytes().rstrip(b"\0").decode("utf-8", "replace").strip()
    except OSError:
        return ""
