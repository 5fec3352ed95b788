"""``KEY=value`` files as systemd's EnvironmentFile= and os-release(5) write them (/etc/default/edgecam,
/etc/os-release): one reader for both. Standard library only."""

from __future__ import annotations

import shlex


def parse_assignments(text: str) -> dict:
    """Lines ``KEY=value`` (the value shell-quoted or not; ``export`` allowed) -> {KEY: value}; comments,
    blank and other lines skipped."""
    fields = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, equals, value = line.partition("=")
        if not equals or not key.isidentifier():
            continue
        try:
            words = shlex.split(value)
        except ValueError:  # an unbalanced quote: keep the raw value rather than lose the line
            words = [value]
        fields[key] = " ".join(words) if len(words) > 1 else (words[0] if words else "")
    return fields
