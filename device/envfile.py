"""``KEY=value`` files as systemd's EnvironmentFile= and os-release(5) write them (/etc/default/edgecam,
/etc/os-release): one reader for both. Standard library only."""

from __future__ import annotations

import shlex


def assignment(line: str) -> tuple:
    """-> (KEY, raw value) for a ``KEY=value`` line (``export`` allowed), else (None, None)."""
    text = line.strip()
    if text.startswith("export "):
        text = text[len("export "):].lstrip()
    key, equals, value = text.partition("=")
    return (key, value) if equals and key.isidentifier() else (None, None)


def unquote(value: str) -> str:
    """A raw value as the shell reads it (quotes removed, words joined by one space); an unbalanced quote keeps
    the raw value rather than lose the line."""
    try:
        words = shlex.split(value)
    except ValueError:
        return value.strip()
    return " ".join(words)


def parse_assignments(text: str) -> dict:
    """Lines ``KEY=value`` (the value shell-quoted or not; ``export`` allowed) -> {KEY: value}; comments,
    blank and other lines skipped."""
    fields = {}
    for line in text.splitlines():
        key, value = assignment(line)
        if key is not None:
            fields[key] = unquote(value)
    return fields
