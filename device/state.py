"""The device's state folder: what a device learns lives here, never inside a release.

A release (``/opt/edgecam/releases/ID``) is read-only under the unit's ``ProtectSystem=strict`` and is replaced by
the next install or a rollback; the state folder (``/var/lib/edgecam``, the unit's ``StateDirectory=``) is the one
place the service may write that survives restarts, upgrades and rollbacks. Its layout::

    STATE/
      dataset/                      the Teach view's captured frames (class folders), unless --dataset says otherwise
      models/<model key>/           what was fitted to one model, keyed by the sha256 of the model file it embeds
                                    with (so it is never applied to another model, and a rollback finds it again)
      tuning/                       the tuner's measurements (device/tune.py)
      serving.json                  what the daemon serves and why (device/serving.py): shell commands read it

(``RELEASE/state/`` is another folder: install.sh's verdict of ``device doctor --verdict-dir`` for that release's
venv, and its rendered unit. One word each: the state folder is this one.)

Which folder: ``--state-dir``, else ``$EDGECAM_STATE_DIR``, else ``$STATE_DIRECTORY`` (set by systemd for a unit
with ``StateDirectory=``; its first entry), else none (the caller decides: a laptop run without a state folder).
:func:`device_state_dir` adds the installed device's folder (``/var/lib/edgecam``, when it exists and this user may
write it), so that ``sudo -u edgecam python -m device teach ...`` in a shell finds what the service keeps.
"""

from __future__ import annotations

import os
from pathlib import Path

STATE_DIR_ENV = "EDGECAM_STATE_DIR"
SYSTEMD_STATE_ENV = "STATE_DIRECTORY"  # systemd.exec(5): colon-separated, one entry per StateDirectory=
SYSTEM_STATE_DIR = Path("/var/lib/edgecam")  # the unit's StateDirectory=edgecam (install.sh's device)
MODELS = "models"
DATASET = "dataset"
TUNING = "tuning"
SERVING = "serving.json"  # the daemon's serving plan (device/serving.py), rewritten at every load


def resolve_state_dir(explicit: str | os.PathLike | None = None, environ=None) -> Path | None:
    """The state folder to use: EXPLICIT (--state-dir), $EDGECAM_STATE_DIR, systemd's $STATE_DIRECTORY, or None."""
    environ = os.environ if environ is None else environ
    for value in (explicit, environ.get(STATE_DIR_ENV), (environ.get(SYSTEMD_STATE_ENV) or "").split(":")[0]):
        if value:
            return Path(value)
    return None


def device_state_dir(explicit: str | os.PathLike | None = None, environ=None) -> Path | None:
    """resolve_state_dir(), else SYSTEM_STATE_DIR when it is a folder this user may write (an installed device,
    from a shell: no systemd variables there), else None (a laptop run: taught heads stay beside the bundle)."""
    resolved = resolve_state_dir(explicit, environ)
    if resolved is not None:
        return resolved
    if SYSTEM_STATE_DIR.is_dir() and os.access(SYSTEM_STATE_DIR, os.W_OK | os.X_OK):
        return SYSTEM_STATE_DIR
    return None


def model_key(sha256: str) -> str:
    """The folder name under STATE/models/ for a model file whose sha256 is SHA256 (16 hex digits: 64 bits)."""
    text = (sha256 or "").strip().lower()
    if len(text) < 16 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return text[:16]


def model_dir(state_dir: os.PathLike, sha256: str) -> Path:
    return Path(state_dir) / MODELS / model_key(sha256)
