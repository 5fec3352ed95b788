"""This host's settings from the fleet's inventory, written into /etc/default/edgecam: run ON the device by the
fleet playbook (rollout.yml). Standard library only::

    python3 settings.py --file /etc/default/edgecam --values VALUES.json

VALUES.json ({"EDGECAM_MQTT_TOPIC": "edgecam/kitchen", "EDGECAM_TOKEN": "...", ...}, mode 0600, removed once
read) comes from the inventory's variables. They go into one managed block at the top of the file::

    # BEGIN edgecam fleet (from the Ansible inventory: change it there; sha256 0123456789ab)
    EDGECAM_MQTT_TOPIC="edgecam/kitchen"
    # END edgecam fleet

Nothing outside the block is changed, and the host's own lines come after it, so systemd (last assignment
wins) lets a host's own line win. What the report gets (JSON on stdout, never a value, so no token):
``overridden``: a host's own line (or ``--http`` in its EDGECAM_ARGS) that sets a managed setting to another
value, so the inventory's does not apply there; ``edited``: managed lines someone changed by hand since the
last rollout (the block's sha256 no longer matches), now replaced by the inventory's values. The file is
replaced in one step (written beside it, fsynced, renamed) with its mode and owner (0600 when new).
Exit 0, or 2 with one line on stderr for a value systemd cannot hold or a file that cannot be written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

BEGIN = "# BEGIN edgecam fleet"
END = "# END edgecam fleet"
FLAGS = {"EDGECAM_HTTP": "--http", "EDGECAM_MQTT": "--mqtt", "EDGECAM_MQTT_TOPIC": "--mqtt-topic",
         "EDGECAM_NAME": "--name", "EDGECAM_WEBHOOK": "--webhook"}  # the daemon flag each setting defaults


def assignment(line: str) -> tuple:
    text = line.strip()
    if text.startswith("export "):
        text = text[len("export "):].lstrip()
    key, equals, value = text.partition("=")
    if not equals or not key.isidentifier():
        return None, None
    try:
        words = shlex.split(value)
    except ValueError:
        words = [value]
    return key, " ".join(words)


def digest(body: list) -> str:
    return hashlib.sha256("\n".join(body).encode("utf-8")).hexdigest()[:12]


def block_lines(values: dict) -> list:
    body = []
    for key, value in values.items():
        if not key.isidentifier() or any(character in value for character in '"\\$`\n\r'):
            raise ValueError(f"{key}: a value for /etc/default/edgecam may not hold \", \\, $, ` or a line break")
        body.append(f'{key}="{value}"')
    if not body:
        return []
    return [f"{BEGIN} (from the Ansible inventory: change it there; sha256 {digest(body)})", *body, END]


def split(lines: list) -> tuple:
    """-> (the host's own lines, the managed block's body or None, its recorded sha256 or None)."""
    own, body, recorded, inside = [], None, None, False
    for line in lines:
        if line.startswith(BEGIN) and not inside:
            inside, body = True, []
            recorded = line.rsplit("sha256 ", 1)[-1].rstrip(")") if "sha256 " in line else None
        elif line.startswith(END) and inside:
            inside = False
        elif inside:
            body.append(line)
        else:
            own.append(line)
    return own, body, recorded


def overriding(own: list, values: dict, first: int = 1) -> list:
    """Managed settings a host's own line sets to another value (those lines win: they come later); line
    numbers count from FIRST (the own lines' first line in the written file)."""
    found = []
    for number, line in enumerate(own, first):
        key, value = assignment(line)
        if key in values and value != values[key]:
            found.append({"key": key, "line": number})
        if key == "EDGECAM_ARGS":
            words = value.split()
            for index, word in enumerate(words):
                for setting, flag in FLAGS.items():
                    given = words[index + 1] if word == flag and index + 1 < len(words) else \
                        word.split("=", 1)[1] if word.startswith(flag + "=") else None
                    if setting in values and given is not None and given != values[setting]:
                        found.append({"key": setting, "line": number, "flag": f"{flag} in EDGECAM_ARGS"})
    return found


def update(text: str, values: dict) -> tuple:
    """-> (new text, report dict)."""
    own, body, recorded = split(text.splitlines())
    edited = []
    if body is not None and recorded != digest(body):
        old = dict(assignment(line) for line in body if assignment(line)[0])
        edited = sorted(key for key in old if old[key] != values.get(key))  # new keys are not edits
    block = block_lines(values)
    new = "\n".join(block + own) + ("\n" if block or own else "")
    report = {"set": sorted(values), "overridden": overriding(own, values, len(block) + 1), "edited": edited,
              "changed": new != text}
    return new, report


def write_atomically(path: Path, text: str) -> None:
    try:
        info = path.stat()
        mode, owner = info.st_mode & 0o7777, (info.st_uid, info.st_gid)
    except FileNotFoundError:
        mode, owner = 0o600, None
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(handle, mode)
        if owner is not None and os.geteuid() == 0:
            os.fchown(handle, *owner)
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="settings.py", description=__doc__.splitlines()[0])
    parser.add_argument("--file", required=True, help="the service's settings file (ROOT/etc/default/edgecam)")
    parser.add_argument("--values", required=True, help="JSON file of the settings (removed once read)")
    args = parser.parse_args(argv)
    path, source = Path(args.file), Path(args.values)
    try:
        values = {key: str(value) for key, value in json.loads(source.read_text(encoding="utf-8")).items()
                  if str(value)}
    finally:
        source.unlink(missing_ok=True)
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        new, report = update(text, values)
        if report["changed"]:
            write_atomically(path, new)
    except (OSError, ValueError) as error:
        print(f"settings.py: {path}: {error}", file=sys.stderr)
        return 2
    print(json.dumps(dict(report, file=str(path)), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
