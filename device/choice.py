"""Which model and how many interpreter threads the daemon serves, and why: :func:`resolve`.

--model and --threads on the command line always win; what they leave open comes from this bundle's and this
device's tuning record (device/tune.py), made first - by ``python -m device tune`` in a subprocess, so its
interpreters never stay in the daemon's memory - when the daemon has a state folder and finds none; else
int8 with all cores, as before the tuner existed. The :class:`Choice` is logged and shown in /status
("tuning").
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from device.layout import IMX500_FORMAT
from device.tune import DEFAULT_FORMAT, Row, choose, make_plan, read_record, record_path, usable_cores

STARTUP_ALLOWANCE_S = 30.0  # the tuning subprocess: Python, numpy, the interpreter and the models loading on a Pi


@dataclass
class Choice:
    """The model and thread count the daemon serves, and why (its log line and /status "tuning")."""

    model: str
    threads: int
    how: str  # "command line", "tuned", "command line and tuning", "default"
    reason: str
    row: dict | None = None  # the tuning table's row it serves
    record: dict | None = None

    def describe(self) -> dict:
        described = {"how": self.how, "format": self.model, "threads": self.threads, "reason": self.reason}
        if self.row is not None:
            described.update(median_ms=self.row["median_ms"], iqr_ms=self.row["iqr_ms"],
                             date=self.record["date"], key=self.record["key"])
        return described

    def summary(self) -> str:
        measured = f", {self.row['median_ms']:.3f} ms per frame measured {self.record['date']}" if self.row else ""
        threads = f"{self.threads} thread{'s' * (self.threads > 1)}"
        return f"{self.model} with {threads} ({self.how}{measured}): {self.reason}"


def resolve(bundle, manifest, model: str | None, threads: int | None, source: str, state_dir,
            seconds: float, log=None) -> Choice:
    """What the daemon serves. --model and --threads win; what they leave open comes from this bundle's and
    device's tuning record (tuned first, in a subprocess of at most about SECONDS, when there is none), else
    int8 with all cores. Without a state folder nothing is tuned: a laptop run starts at once on int8."""
    say = log or (lambda text: None)
    fallback = Choice(model or DEFAULT_FORMAT, threads or usable_cores(), "default", "")
    if model == IMX500_FORMAT:  # device/imx500.py: the network runs on the AI Camera's sensor
        return Choice(model, threads or 1, "command line", "--model imx500: the network runs on the AI Camera's "
                      "sensor at the camera's frame rate; nothing on the CPU to tune")
    if model is not None and threads is not None:
        return Choice(model, threads, "command line", "--model and --threads given")
    if state_dir is None:
        fallback.reason = ("no state folder (--state-dir, $EDGECAM_STATE_DIR or systemd's StateDirectory=), so no "
                           "tuning is kept or made; python -m device tune --state-dir DIR measures the fastest")
        return fallback
    try:
        plan = make_plan(bundle, manifest, source)
    except ValueError as error:  # no runtime (the loader says it again) or a bad --source (so does the source)
        fallback.reason = f"not tuned: {error}"
        return fallback
    if not plan.candidates:
        fallback.reason = "not tuned: no model format passed parity (" + "; ".join(
            f"{fmt}: {why}" for fmt, why in plan.excluded.items()) + ")"
        return fallback
    record = read_record(state_dir, plan.key)
    if record is None and seconds <= 0:
        fallback.reason = "no tuning for this bundle and device yet (--tune-seconds 0); run python -m device tune"
        return fallback
    if record is None:
        say(f"no tuning for this bundle and device: measuring {', '.join(plan.candidates)} with 1-"
            f"{plan.device['cores']} threads (about {seconds:g} s, once)")
        record, problem = tune_in_subprocess(bundle, state_dir, source, seconds, plan.key)
        if record is None:
            fallback.reason = f"tuning failed ({problem})"
            return fallback
    spec_format = None
    if model is not None:
        from device.runtime import parse_model_spec

        spec_format = parse_model_spec(model).format
    fields = ("format", "threads", "median_ms", "p25_ms", "p75_ms", "frames")
    rows = [Row(**{key: row.get(key) for key in fields}) for row in record["table"]
            if isinstance(row, dict) and all(isinstance(row.get(key), (int, float)) for key in fields[2:5])
            and (model is None or row.get("format") == spec_format)
            and (threads is None or row.get("threads") == threads)]
    chosen = choose(rows)
    if chosen is None:
        fallback.reason = f"the tuning {record_path(state_dir, plan.key)} measured no candidate with --model {model}"
        return fallback
    given = "--model" if model is not None else "--threads" if threads is not None else None
    how = "command line and tuning" if given else "tuned"
    reason = (f"{given} given; the rest from {record_path(state_dir, plan.key)}" if given
              else f"the fastest of {len(rows)} measured in {record_path(state_dir, plan.key)}")
    return Choice(model or chosen.format, chosen.threads, how, reason, chosen.to_dict(), record)


def tune_in_subprocess(bundle, state_dir, source: str, seconds: float, key: str) -> tuple:
    """Run ``python -m device tune`` (its interpreters and frames never stay in the daemon's memory) ->
    (the record filed under KEY, None) or (None, what went wrong)."""
    import subprocess

    package_parent = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "device", "tune", "--bundle", str(bundle), "--state-dir", str(state_dir),
               "--source", source, "--seconds", f"{seconds:g}", "--quiet"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + STARTUP_ALLOWANCE_S,
                              env=dict(os.environ, PYTHONPATH=path))
    except subprocess.TimeoutExpired:
        return None, f"python -m device tune took over {seconds + STARTUP_ALLOWANCE_S:g} s"
    except OSError as error:
        return None, f"python -m device tune could not start: {error}"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout or "").strip().splitlines()
        return None, f"python -m device tune exited {done.returncode}: {lines[-1] if lines else 'no message'}"
    record = read_record(state_dir, key)
    if record is None:
        return None, f"python -m device tune left no record at {record_path(state_dir, key)}"
    return record, None


def tuned_format(manifest, state_dir) -> str | None:
    """The format this device's newest tuning record of MANIFEST's models chose - what a daemon started without
    --model serves here - or None (no state folder, nothing tuned, or tuned on another board or runtime).
    ``python -m device teach|undo|status`` default to it, so a teach from a shell writes the heads the daemon
    reads."""
    if state_dir is None:
        return None
    from device.tune import TUNING, device_facts

    newest, device = None, None
    for path in sorted((Path(state_dir) / TUNING).glob("*.json")):
        record = read_record(state_dir, path.stem)
        models = record.get("models") if record is not None else None
        if not models or any(fmt not in manifest.models or manifest.models[fmt].sha256 != sha
                             for fmt, sha in models.items()):
            continue
        try:
            device = device if device is not None else device_facts()
        except ValueError:  # no interpreter runtime here: the daemon could not serve anything either
            return None
        if record.get("device") == device and (newest is None or str(record["date"]) > str(newest["date"])):
            newest = record
    return newest["choice"].get("format") if newest is not None else None
