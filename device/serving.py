"""The serving plan: which model file serves, with how many interpreter threads, on which runtime, with whose
taught heads, and why - decided once per set of model files (:func:`resolve`) and written by the daemon to
``STATE/serving.json`` at every load (:func:`write_plan`). ``python -m device teach|undo|status``, the teach
service, /status (``serving``; ``tuning`` for the fleet report) and ``python -m device tune`` read it
(:func:`served`) instead of deciding again.

The rules, in order:

1. ``--model`` and ``--threads`` win.
2. Without a state folder nothing is tuned or taught there: int8 on every core.
3. A taught head is followed: when the newest head-store change among this bundle's formats (a teach, an undo,
   a re-fit) left a taught head in use, that head's format serves (an Edge TPU model shares int8's heads, so the
   tuner may still pick it). A ``teach`` and a restart in any order serve the taught head at once.
4. Else the tuning record of this bundle and device (device/tune.py), once it is validated against the bundle
   (:func:`check_record`: every row a format the tuner may measure here, threads 1 to the usable cores,
   finite times). A record that fails is ignored, logged, and tuned again; when that cannot happen now int8
   serves and the plan says why. Nothing in a record can stop the daemon.
5. Else int8 on every core (docs/tuning.md: "int8 when tuning is impossible").
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from device.heads.store import CURRENT, head_format
from device.layout import IMX500_FORMAT
from device.state import SERVING, model_dir
from device.tune import DEFAULT_FORMAT, Row, choose, make_plan, read_record, record_path, usable_cores

log = logging.getLogger("edgecam.serving")
SCHEMA = "edgecam-serving/1"
STARTUP_ALLOWANCE_S = 30.0  # the tuning subprocess: Python, numpy, the interpreter and the models loading on a Pi


@dataclass
class Plan:
    """What serves and why. ``model`` is what the loader gets (a format, ``edgetpu@usb:0``, or a .tflite path);
    ``path``, ``sha256``, ``runtime`` and ``head_key`` are filled in once the model is loaded (:meth:`loaded`)."""

    model: str
    threads: int
    how: str  # "command line", "tuned", "command line and tuning", "taught head", "default"
    why: str
    models: dict = field(default_factory=dict)  # the bundle's format -> sha256: the files this plan is for
    row: dict | None = None  # the tuning table's row it serves
    tuning: dict | None = None  # the record's date and key
    tune_later: bool = False  # nothing usable was tuned and tuning was not allowed now (a reload)
    format: str = ""
    path: str = ""
    sha256: str = ""
    runtime: str = ""
    head_key: str = ""  # the sha256 of the model whose head store serves (int8's for an Edge TPU model)

    def loaded(self, model) -> Plan:
        self.format, self.path, self.sha256 = model.format or "", str(model.path), model.sha256
        self.runtime = model.runtime
        self.head_key = self.models.get(head_format(self.format), "") if self.format else model.sha256
        return self

    def describe(self) -> dict:
        """/status "tuning" (the fleet report's TUNED column) and "serving"."""
        described = {"how": self.how, "format": self.format or self.model, "model": self.model,
                     "threads": self.threads, "reason": self.why}
        if self.row is not None:
            described.update(median_ms=self.row["median_ms"], iqr_ms=self.row["iqr_ms"], **(self.tuning or {}))
        return described

    def record(self, bundle) -> dict:
        """What STATE/serving.json holds."""
        return dict(asdict(self), schema=SCHEMA, bundle=str(Path(bundle).resolve()), pid=os.getpid(),
                    written=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def summary(self) -> str:
        measured = (f", {self.row['median_ms']:.3f} ms per frame measured {(self.tuning or {}).get('date')}"
                    if self.row else "")
        threads = f"{self.threads} thread{'s' * (self.threads > 1)}"
        return f"{self.format or self.model} with {threads} ({self.how}{measured}): {self.why}"


# ---- deciding ---------------------------------------------------------------------------------------
def resolve(bundle, manifest, model: str | None, threads: int | None, source: str, state_dir, seconds: float,
            say=None, tune: bool = True) -> Plan:
    """The plan for BUNDLE's models (see the module's rules). TUNE False (a reload on the inference thread, a
    shell command): never measures; the plan then says ``tune_later``. Never raises."""
    say = say or (lambda text: None)
    models = {fmt: entry.sha256 for fmt, entry in manifest.models.items()}
    try:
        return _resolve(bundle, manifest, model, threads, source, state_dir, seconds, say, tune, models)
    except Exception as error:  # noqa: BLE001 - no record, head store or device probe may stop the daemon
        log.warning("the serving plan fell back to %s: %s: %s", DEFAULT_FORMAT, type(error).__name__, error)
        return Plan(model or DEFAULT_FORMAT, threads or usable_cores(), "default",
                    f"could not be decided ({type(error).__name__}: {error})", models)


def _resolve(bundle, manifest, model, threads, source, state_dir, seconds, say, tune, models) -> Plan:
    def default(why: str, **extra) -> Plan:
        return Plan(model or DEFAULT_FORMAT, threads or usable_cores(), "default", why, models, **extra)

    if model == IMX500_FORMAT:  # device/imx500.py: the network runs on the AI Camera's sensor
        return Plan(model, threads or 1, "command line", "--model imx500: the network runs on the AI Camera's "
                    "sensor at the camera's frame rate; nothing on the CPU to tune", models)
    if model is not None and threads is not None:
        return Plan(model, threads, "command line", "--model and --threads given", models)
    if state_dir is None:
        return default("no state folder (--state-dir, $EDGECAM_STATE_DIR or systemd's StateDirectory=), so no "
                       "tuning is kept or made; python -m device tune --state-dir DIR measures the fastest")
    taught = taught_format(manifest, state_dir) if model is None else None
    followed = ""
    if taught is not None:
        model = taught
        followed = (f"follows the taught head in {model_dir(state_dir, models[taught])}/heads (the newest teach, "
                    f"undo or re-fit of this bundle's heads), fitted on {taught}'s embeddings")
    try:
        tuning = make_plan(bundle, manifest, source)
    except ValueError as error:  # no runtime (the loader says it again) or a bad --source (so does the source)
        return _taught(model, threads, models, followed) if taught else default(f"not tuned: {error}")
    if not tuning.candidates:
        why = "not tuned: no model format passed parity (" + "; ".join(
            f"{fmt}: {reason}" for fmt, reason in tuning.excluded.items()) + ")"
        return _taught(model, threads, models, followed) if taught else default(why)
    where = record_path(state_dir, tuning.key)
    record = read_record(state_dir, tuning.key)
    rows, problem = check_record(record, tuning) if record is not None else (None, None)
    if problem:
        log.warning("the tuning record %s is not used: %s", where, problem)
    if rows is None and (not tune or seconds <= 0):
        why = (f"the tuning record {where} is not used ({problem})" if problem
               else "no tuning for this bundle and device yet") + \
              ("; it is tuned in the background" if tune is False and seconds > 0 else
               "; run python -m device tune (--tune-seconds 0: never at start)")
        plan = _taught(model, threads, models, followed) if taught else default(f"{DEFAULT_FORMAT}: {why}")
        plan.tune_later = not tune and seconds > 0
        return plan
    if rows is None:
        opening = "tuning again" if problem else "no tuning for this bundle and device"
        say(f"{opening}: measuring {', '.join(tuning.candidates)} with 1-{tuning.device['cores']} threads "
            f"(about {seconds:g} s, once)")
        record, failure = tune_in_subprocess(bundle, state_dir, source, seconds, tuning.key)
        rows, problem = check_record(record, tuning) if record is not None else (None, failure)
        if rows is None:
            return _taught(model, threads, models, followed) if taught else \
                default(f"{DEFAULT_FORMAT}: tuning failed ({problem})")
    if taught:  # the taught format, or the Edge TPU model that shares int8's heads
        wanted = [row for row in rows if head_format(row.format) == head_format(taught)]
    elif model is not None:
        wanted = [row for row in rows if row.format == _format_of(model)]
    else:
        wanted = rows
    wanted = [row for row in wanted if threads is None or row.threads == threads]
    chosen, reason = choose(wanted)
    if chosen is None:
        if taught:
            return _taught(model, threads, models, followed)
        return default(f"{DEFAULT_FORMAT}: the tuning {where} measured no candidate with --model {model}")
    described = {"date": record.get("date"), "key": record.get("key")}
    if taught:
        serve = chosen.format if head_format(chosen.format) == head_format(taught) else taught
        return Plan(serve, threads or chosen.threads, "taught head", f"{followed}; {reason}", models,
                    chosen.to_dict(), described)
    given = "--model" if model is not None else "--threads" if threads is not None else None
    how = "command line and tuning" if given else "tuned"
    why = f"{given} given; the rest from {where}" if given else f"{reason} ({where})"
    return Plan(model or chosen.format, chosen.threads, how, why, models, chosen.to_dict(), described)


def _taught(model: str, threads: int | None, models: dict, followed: str) -> Plan:
    return Plan(model, threads or usable_cores(), "taught head", f"{followed}; every core (not tuned)", models)


def _format_of(model: str) -> str:
    from device.runtime import parse_model_spec

    return parse_model_spec(model).format or ""


def check_record(record: dict, tuning) -> tuple:
    """A tuning record checked against what a tuning of this bundle here would measure -> (its rows, None), or
    (None, why it cannot be used): a format the bundle lacks or the tuner may not measure here (a path, a
    format that failed parity), threads not 1 to the usable cores, a time that is not a finite number."""
    if record.get("models") != tuning.models:
        return None, "it was measured on other model files"
    table = record.get("table")
    if not isinstance(table, list) or not table:
        return None, "it holds no table of measurements"
    rows, cores = [], tuning.device["cores"]
    for number, entry in enumerate(table, 1):
        if not isinstance(entry, dict):
            return None, f"row {number} is not a measurement"
        fmt, count = entry.get("format"), entry.get("threads")
        if not isinstance(fmt, str) or fmt not in tuning.candidates:
            return None, f"row {number} names the format {fmt!r}, which is not one the tuner measures here " \
                         f"({', '.join(tuning.candidates)})"
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= cores:
            return None, f"row {number} has threads {count!r}, not 1 to {cores}"
        times = [entry.get(key) for key in ("median_ms", "p25_ms", "p75_ms")]
        if entry.get("error") is not None and all(value is None for value in times):
            continue  # a candidate that could not run here: reported, not chosen
        if not all(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                   and value >= 0 for value in times) or not times[1] <= times[0] <= times[2]:
            return None, f"row {number} ({fmt} x{count}) has no sound median and quartiles"
        frames = entry.get("frames")
        rows.append(Row(fmt, count, *times, frames if isinstance(frames, int) else 0))
    if not rows:
        return None, "no candidate was measured"
    return rows, None


def taught_format(manifest, state_dir) -> str | None:
    """The format of this bundle whose head store changed last (teach, undo, re-fit), when that change left a
    taught head in use; else None. An Edge TPU model shares int8's store, so it is never named here."""
    newest, when = None, -1
    for fmt, entry in manifest.models.items():
        if fmt != head_format(fmt) or not entry.sha256:
            continue
        try:
            current = model_dir(state_dir, entry.sha256) / "heads" / CURRENT
            stamp = current.stat().st_mtime_ns
            revision = json.loads(current.read_text(encoding="utf-8")).get("revision")
        except (OSError, ValueError, AttributeError):
            continue
        if stamp > when:
            newest, when = (fmt if isinstance(revision, int) and revision > 0 else None), stamp
    return newest


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


def tune_in_background(bundle, manifest, state_dir, source: str, seconds: float, when_done):
    """:func:`tune_in_subprocess` from a thread (a reload never tunes on the inference thread, WatchdogSec=30);
    WHEN_DONE() once a record is filed -> the thread."""
    def run() -> None:
        try:
            tuning = make_plan(bundle, manifest, source)
            log.info("no tuning for this bundle and device: measuring %s in the background (about %g s)",
                     ", ".join(tuning.candidates), seconds)
            record, problem = tune_in_subprocess(bundle, state_dir, source, seconds, tuning.key)
        except Exception as error:  # noqa: BLE001 - a failed tuning leaves the plan serving
            record, problem = None, f"{type(error).__name__}: {error}"
        if record is None:
            log.warning("background tuning failed (%s): serving what is known", problem)
            return
        when_done()

    thread = threading.Thread(target=run, name="edgecam-tune", daemon=True)
    thread.start()
    return thread


# ---- the file -------------------------------------------------------------------------------------------
def write_plan(state_dir, bundle, plan: Plan) -> None:
    """STATE/serving.json, atomically; a state folder that cannot be written is logged, never fatal."""
    from device.atomic import atomic_write

    try:
        atomic_write(Path(state_dir) / SERVING, json.dumps(plan.record(bundle), indent=2, sort_keys=True) + "\n")
    except OSError as error:
        log.warning("could not write %s (%s): shell commands decide the served model again",
                    Path(state_dir) / SERVING, error.strerror or error)


def read_plan(state_dir, bundle, manifest) -> dict | None:
    """The plan a daemon of BUNDLE wrote in STATE_DIR, when it is for these very model files; else None."""
    try:
        plan = json.loads((Path(state_dir) / SERVING).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    models = {fmt: entry.sha256 for fmt, entry in manifest.models.items()}
    if not isinstance(plan, dict) or plan.get("schema") != SCHEMA or plan.get("models") != models \
            or plan.get("bundle") != str(Path(bundle).resolve()) or not isinstance(plan.get("model"), str):
        return None
    return plan


def served(bundle, manifest, state_dir, source: str = "picamera2") -> dict:
    """What a shell command acts on when not told --model: the plan of the daemon serving BUNDLE here
    (STATE/serving.json), else the plan a daemon would make now (without tuning) -> {"model", "threads",
    "how", "why", "from"}."""
    if state_dir is not None:
        plan = read_plan(state_dir, bundle, manifest)
        if plan is not None:
            return {"model": plan["model"], "threads": plan.get("threads"), "how": plan.get("how"),
                    "why": plan.get("why"), "from": str(Path(state_dir) / SERVING)}
    plan = resolve(bundle, manifest, None, None, source, state_dir, 0.0, tune=False)
    return {"model": plan.model, "threads": plan.threads, "how": plan.how, "why": plan.why, "from": None}


def teach_model(model: str) -> str:
    """The --model a teach embeds with for a daemon serving MODEL: the same file, or int8's for an Edge TPU model
    (the daemon holds the Edge TPU; int8 is the graph it was compiled from and shares its heads)."""
    from device.layout import EDGETPU_FORMAT
    from device.runtime import parse_model_spec

    spec = parse_model_spec(model)
    if spec.edgetpu:
        return head_format(EDGETPU_FORMAT)
    return spec.format or spec.path
