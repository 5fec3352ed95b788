"""``python -m device capture | teach | evaluate``: the teach loop from a shell (over ssh, headless).

    python -m device capture --bundle B --source picamera2 --label paper --count 40 --interval 0.5
    python -m device teach --bundle B --data /var/lib/edgecam/dataset     # --force, --undo
    python -m device evaluate --bundle B --data DIR                       # Markdown + mistakes.png

Exit codes (device/exitcodes.py): 0 ok (teach: the head was accepted, or nothing changed
since it was taught), 1 teach refused a worse head (quality),
2 bad input or configuration, a full disk (not retried), 3 a temporary condition worth a retry (the camera
busy, the bundle locked).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from pathlib import Path

from device import exitcodes
from device.validators import non_negative_float, positive_int

FORMATTER = argparse.ArgumentDefaultsHelpFormatter
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _progress(title: str):
    def report(done: int, total: int) -> None:
        if done == total or done % 25 == 0:
            print(f"\r{title}: {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)
    return report


# ---- capture ------------------------------------------------------------------------------------
def capture(argv: list) -> int:
    parser = argparse.ArgumentParser(prog="python -m device capture", formatter_class=FORMATTER,
                                     description="Record labelled camera frames into the data set (the camera's "
                                                 "frame, not the model-size crop: the Pi camera's main stream, "
                                                 "1280x960; as JPEG, with the model's reading in index.jsonl).")
    parser.add_argument("--bundle", required=True, help="bundle folder (its model records its reading of each frame)")
    parser.add_argument("--source", default="picamera2", help="picamera2[:N] | opencv:INDEX|PATH|URL | images:DIR")
    parser.add_argument("--label", required=True, help="class to record (1-40 letters, digits, - or _)")
    parser.add_argument("--count", type=positive_int, default=20, help="frames to record")
    parser.add_argument("--interval", type=non_negative_float, default=0.5, help="seconds between frames")
    parser.add_argument("--dataset", default=None,
                        help="data set folder (default: /var/lib/edgecam/dataset if it exists and is writable, "
                             "else ./data/NAME-own)")
    parser.add_argument("--model", default="int8", help="model format that reads each frame")
    parser.add_argument("--dataset-limit-mb", type=non_negative_float, default=2000.0, help="data set size limit")
    parser.add_argument("--min-free-mb", type=non_negative_float, default=500.0, help="free-space floor")
    add_region_arguments(parser, "label this region of each whole frame (the frame is kept whole, the label goes "
                                 "to DATASET/regions.jsonl); default: the whole frame, into class folders")
    args = parser.parse_args(argv)
    from device.sources import EndOfStream, SourceError, open_source
    from device.teach.dataset import Dataset, DatasetFull, check_class_name, default_root
    from device.teach.teaching import load_classifier_any

    program = "edgecam capture"
    try:
        check_class_name(args.label)
        region = _region(args)
        classifier = load_classifier_any(args.bundle, args.model, state_dir=args.state_dir, region=region)
        root = args.dataset or default_root(classifier.manifest.name, args.state_dir)
        dataset = Dataset(root, int(args.dataset_limit_mb * 1e6), int(args.min_free_mb * 1e6))
        if region is None:
            dataset.add_class(args.label)
        else:
            from device.teach import regionlabels

            recorded = regionlabels.counts(root, region.name).get(args.label, 0)
        source = open_source(args.source, (classifier.model.width, classifier.model.height), False)
    except ValueError as error:  # a bad label, bundle, --dataset or --source spec
        return exitcodes.fail(program, str(error), exitcodes.BAD_INPUT)
    except DatasetFull as error:
        return exitcodes.fail(program, f"recording stopped: {error}", exitcodes.BAD_INPUT)
    try:
        source.open()
        for number in range(args.count):
            if number:
                time.sleep(args.interval)
            frame = source.read_full()  # the whole camera frame (the Pi camera's main stream), for the data set
            probabilities = classifier.probabilities(frame if region is None else region.crop(frame))
            best = int(probabilities.argmax())
            reading = {"label": classifier.labels[best], "confidence": round(float(probabilities[best]), 4)}
            if region is None:
                relative, count = dataset.save(frame, args.label, args.source, classifier.name, reading)
                print(json.dumps({"file": relative, "count": count, "reading": reading}), flush=True)
                continue
            relative = regionlabels.save(dataset, frame, {region.name: args.label}, {region.name: region.box},
                                         args.source)
            recorded += 1
            print(json.dumps({"file": relative, "region": region.name, "count": recorded, "reading": reading}),
                  flush=True)
    except DatasetFull as error:  # the size limit, the free-space floor, or a disk that filled up meanwhile
        return exitcodes.fail(program, f"recording stopped: {error}", exitcodes.BAD_INPUT)
    except EndOfStream as error:
        return exitcodes.fail(program, f"the source ran out of frames ({error}); ask for fewer with --count.",
                              exitcodes.BAD_INPUT)
    except SourceError as error:  # a busy or unplugged camera: worth a retry
        return exitcodes.fail(program, f"the source failed ({error}); try again when the camera is free.",
                              exitcodes.RETRY)
    except ValueError as error:  # SourceConfigError (no such folder, no library), DatasetError
        return exitcodes.fail(program, str(error), exitcodes.BAD_INPUT)
    except OSError as error:  # the data set's disk or folder (the sources raise SourceError for the camera)
        return exitcodes.fail(program, exitcodes.describe(error), exitcodes.code_for(error))
    finally:
        source.close()
    where = f" for region {region.name}" if region is not None else ""
    print(f"recorded {args.count} frames of {args.label}{where} into {dataset.root}", file=sys.stderr)
    return 0


def add_region_arguments(parser, help_text: str) -> None:
    """--region NAME[=X,Y,W,H], --regions-file, --state-dir: the commands that act on one region (device/regions/__init__.py)."""
    parser.add_argument("--region", default=argparse.SUPPRESS, metavar="NAME[=X,Y,W,H]",
                        help=help_text + ". NAME alone takes its box from the device's regions (STATE/regions.json, "
                                         "else --regions-file)")
    parser.add_argument("--regions-file", default=argparse.SUPPRESS, metavar="TOML",
                        help="regions settings file (default: none)")
    if not any("--state-dir" in action.option_strings for action in parser._actions):
        parser.add_argument("--state-dir", default=None, help=STATE_DIR_HELP)


def _region(args):
    """--region -> device.regions.Region, or None (the whole frame). RegionError (a ValueError) when bad."""
    if not getattr(args, "region", None):
        return None
    from device.regions import find
    from device.state import device_state_dir

    return find(args.region, getattr(args, "regions_file", None), device_state_dir(args.state_dir))


# ---- teach, undo, status ------------------------------------------------------------------------
SERVED_HELP = ("(default: the one the daemon serves here, from its serving plan STATE/serving.json, or the plan "
               "it would make; an Edge TPU model's heads are int8's)")
STATE_DIR_HELP = ("state folder that keeps the taught heads (default: $EDGECAM_STATE_DIR, systemd's $STATE_DIRECTORY, "
                  "/var/lib/edgecam when this user may write it, else the heads stay in BUNDLE/heads)")


def teach(argv: list) -> int:
    # The fit's matrices are small: threaded BLAS only spins on them (8x the CPU time for the same fit, measured
    # with bench.teach --fit-cost). Only in a fresh `python -m device teach` process (numpy not loaded yet, so
    # the setting takes and no caller's environment changes); a value the user set wins.
    if "numpy" not in sys.modules:
        for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, "1")
    parser = argparse.ArgumentParser(prog="python -m device teach", formatter_class=FORMATTER,
                                     description="Fit a new classifier head on a data set's frames (numpy, on "
                                                 "this device) and keep it when it is no worse than the current one.")
    parser.add_argument("--bundle", required=True, help="bundle folder (converted with an embedding output)")
    parser.add_argument("--data", default=None,
                        help="data set: a folder of class folders (default: the same as capture's --dataset)")
    parser.add_argument("--model", default=None, help=f"model format that embeds the frames {SERVED_HELP}")
    parser.add_argument("--force", action="store_true", help="keep the new head even when it scores worse")
    parser.add_argument("--undo", action="store_true", help="go back one head revision instead of teaching "
                                                            "(the same as python -m device undo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds and the fit")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="interpreter threads (default: the daemon's, else every core)")
    parser.add_argument("--state-dir", default=None, help=STATE_DIR_HELP)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line (the daemon uses it)")
    add_region_arguments(parser, "teach this region's own head on the frames labelled for it (DATA/regions.jsonl), "
                                 "cropped to its box; default: the whole frame")
    args = parser.parse_args(argv)
    _served_model(args)
    args.threads = args.threads or os.cpu_count() or 1
    if args.undo:
        return _undo(args)
    from device.manifest import load_manifest
    from device.teach.dataset import default_root

    def run() -> dict:
        from device.teach.teaching import teach as run_teach

        _store(args)[0].check_writable()  # a locked, read-only or full store fails now, not after embedding
        data = args.data or default_root(load_manifest(args.bundle).name, args.state_dir)
        return run_teach(args.bundle, data, args.model, args.force, args.seed, args.threads,
                         progress=None if args.json else _progress("embedding"), state_dir=args.state_dir,
                         region=_region(args))

    result, code = _guarded("teach", args.json, run)
    if result is None:
        return code
    print(json.dumps(result) if args.json else summary(result))
    return 0 if result["accepted"] or result.get("unchanged") else 1


def undo(argv: list) -> int:
    return _undo(_head_arguments(argv, "undo", "Go back one taught head revision (to the one that was in use "
                                 "before it); at revision 0 the bundle's own head serves.", "undo",
                                 "print the result as one JSON line (the daemon uses it)"))


def _head_arguments(argv: list, command: str, description: str, verb: str, json_help: str):
    """The arguments undo and status share: --bundle, --model (default: the format the daemon serves here),
    --state-dir, --json."""
    parser = argparse.ArgumentParser(prog=f"python -m device {command}", formatter_class=FORMATTER,
                                     description=description)
    parser.add_argument("--bundle", required=True, help="bundle folder")
    parser.add_argument("--model", default=None, help=f"model format whose heads to {verb} {SERVED_HELP}")
    parser.add_argument("--state-dir", default=None, help=STATE_DIR_HELP)
    parser.add_argument("--json", action="store_true", help=json_help)
    add_region_arguments(parser, f"{verb} this region's heads; default: the whole frame's")
    args = parser.parse_args(argv)
    _served_model(args)
    return args


def _undo(args) -> int:
    def run() -> dict:
        store, manifest = _store(args)
        revision = store.undo()
        return {"revision": revision, "labels": _serving(store, manifest)["labels"]}

    result, code = _guarded("undo", args.json, run)
    if result is None:
        return code
    kind = "the bundle's own" if result["revision"] == 0 else "taught"
    print(json.dumps(result) if args.json else
          f"now using head revision {result['revision']} ({kind}): {', '.join(result['labels'])}")
    return 0


def status(argv: list) -> int:
    args = _head_arguments(argv, "status", "Which head serves the bundle's model (revision, labels), for which "
                           "model, fitted on which frames, and where its revisions are kept.", "show",
                           "print the head as one JSON object")

    def run() -> dict:
        store, manifest = _store(args)
        return dict(_serving(store, manifest, args.model), bundle_head=_bundle_head(args.bundle, manifest),
                    drift=_drift(args, store, manifest))

    head, code = _guarded("status", args.json, run)
    if head is None:
        return code
    print(json.dumps(head) if args.json else describe_head(head))
    return 0


def _drift(args, store, manifest) -> dict:
    """The serving head's drift reference and the daily drift summaries (device/drift.py)."""
    from device import drift
    from device.heads import store as revisions

    active, _problem = revisions.serving_head(store, manifest)
    reference, note = drift.reference_for(args.bundle, manifest, _format(args.model), store, active)
    scope = None  # the whole frame's and every region's days; --region: that region's
    if getattr(args, "region", None):
        from device.regions import parse_reference

        scope = drift.region_scope(parse_reference(args.region)[0])
    return {"reference": note if reference is not None else None, "not_measured": None if reference else note,
            "days": drift.history_lines(store.state_dir, scope)}


def _bundle_head(bundle, manifest) -> str:
    """Revision 0 in numpy (tflite/head.npz, which the manifest names with its sha256), read and checked."""
    from device.heads.store import bundle_head

    try:
        head = bundle_head(bundle, manifest)
    except ValueError as error:
        return f"unusable: {error}"
    return f"{manifest.embedding.head_file}: {head.size} x {head.classes}, sha256 as in the manifest"


def describe_head(head: dict) -> str:
    """``python -m device status`` in words."""
    if head["source"] == "taught":
        lines = [f"head revision {head['revision']} (taught): {', '.join(head['labels'])}",
                 f"fitted on {head.get('frames') or '?'} frames from {head.get('data') or '?'} at "
                 f"{head.get('fitted') or '?'}; held-out accuracy {_percent(head.get('accuracy'))}"]
    else:
        lines = [f"head revision 0 (the bundle's own): {', '.join(head['labels'])}; accuracy "
                 f"{_percent(head.get('accuracy'))}"]
    lines.append(f"model sha256 {head['model_sha256']}; revisions kept in {head['store']}")
    for key, title in (("bundle_head", "the bundle's own head"), ("store_note", "store"), ("fallback", "NOT SERVED")):
        if head.get(key):
            lines.append(f"{title}: {head[key]}")
    drift = head.get("drift") or {}
    if drift:
        lines.append(f"drift reference: {drift.get('reference') or 'none, drift not measured: ' + drift['not_measured']}")
        lines.extend(f"drift {line}" for line in drift.get("days") or ["history: none yet (the daemon writes it)"])
    return "\n".join(lines)


def _percent(value) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else "unknown"


def _served_model(args) -> None:
    """--model left out: the model the daemon serves here (its serving plan, STATE/serving.json; else the plan
    a daemon would make now, device/serving.py), as a teach embeds with it (an Edge TPU model: int8); its
    threads too when --threads is left out. A teach from a shell then writes the heads the daemon reads."""
    if args.model is not None:
        return
    from device import serving
    from device.manifest import load_manifest
    from device.state import device_state_dir

    try:
        plan = serving.served(args.bundle, load_manifest(args.bundle), device_state_dir(args.state_dir))
        args.model = serving.teach_model(plan["model"])
    except ValueError:  # a bundle that cannot be read: the command's own loading says what is wrong
        args.model = "int8"
        return
    if getattr(args, "threads", 0) is None and isinstance(plan.get("threads"), int) and plan["threads"] > 0:
        args.threads = plan["threads"]


def _store(args):
    from device.heads import store as revisions
    from device.manifest import load_manifest, sha256_file

    manifest = load_manifest(args.bundle)
    spec = _spec(args.model)
    loaded = sha256_file(spec.path) if spec.path else ""  # a .tflite path: its heads are keyed by its own hash
    store = revisions.open_store(args.bundle, manifest, spec.format or "", args.state_dir, loaded)
    if getattr(args, "region", None):  # a region's heads: its name is enough (no box needed to undo or show)
        from device.regions import parse_reference
        from device.regions.serve import region_store

        store = region_store(store, parse_reference(args.region)[0])
    return store, manifest


def _spec(model: str):
    """--model as the daemon takes it (int8, edgetpu@usb:0, float32, a .tflite path) -> its ModelSpec."""
    from device.runtime import parse_model_spec

    return parse_model_spec(model)


def _format(model: str) -> str:
    return _spec(model).format or ""


def _serving(store, manifest, model_format: str = "") -> dict:
    from device.heads import store as revisions

    active, problem = revisions.serving_head(store, manifest)
    head = store.describe(manifest, _format(model_format) if model_format else None, active)
    if problem:
        head["fallback"] = problem
    return head


def _guarded(command: str, as_json: bool, run):
    """RUN() -> (its result, None), or (None, the exit code) after one clear line (stderr; and a JSON ``error``
    line with its ``kind`` for the daemon): 2 bad input or a store a person must fix (read-only, full), 3 locked."""
    from device.heads.store import StoreLocked, StoreUnwritable

    try:
        return run(), None
    except StoreLocked as error:
        kind, code, message = "locked", 3, str(error)
    except StoreUnwritable as error:
        kind, code, message = "storage", 2, error.strerror
    except ValueError as error:
        kind, code, message = "input", 2, str(error)
    except OSError as error:  # a data set or bundle file that cannot be read, a full disk: device/exitcodes.py
        kind = "storage" if error.errno in STORAGE_ERRNOS else "io"  # room a person must make, or a failed read
        code, message = exitcodes.code_for(error), exitcodes.describe(error, "")
    if as_json:
        print(json.dumps({"error": message, "kind": kind}))
    print(f"edgecam {command}: {message}", file=sys.stderr)
    return None, code


def summary(result: dict) -> str:
    """The teach result for a person: the verdict, how it was measured, each class, and what to do next."""
    if result.get("unchanged"):
        return f"UNCHANGED: still head revision {result['revision']}; {result['reason']}"
    current = result["accuracy_current"]
    method = "nearest class mean" if result.get("method") == "nearest-mean" else "softmax regression"
    lines = [f"new head ({method}, fitted on all {result['trained']} frames): {result['accuracy_new']:.1%} "
             f"cross-validated; current head (revision {result['current_revision']}) {current:.1%}",
             f"measured by {result['validation']}",
             ("ACCEPTED: now head revision " if result["accepted"] else "REFUSED: still head revision ")
             + f"{result['revision']} ({', '.join(result['labels'])}); {result['reason']}"]
    for row in result.get("per_class", []):
        confused = ", ".join(f"{other['label']} {other['count']}" for other in row["confused_with"]) or "nothing"
        helps = {True: "more frames still help", False: "more frames no longer help", None: "too few frames to say"}
        accuracy = "-" if row["accuracy"] is None else f"{row['accuracy']:.0%}"
        lines.append(f"  {row['label']}: {accuracy} of {row['frames']} frames; confused with {confused}; "
                     f"{helps[row['more_frames_help']]}")
    lines += [f"advice: {line}" for line in result.get("advice", [])]
    if result.get("mistakes"):
        shown = result["mistakes"][:5]
        lines.append(f"{len(result['mistakes'])} frame(s) the head in use gets wrong (relabel or delete them), worst "
                     f"first: {', '.join(shown)}{' ...' if len(result['mistakes']) > len(shown) else ''}")
    lines.append(f"{result['seconds']:.1f} s (embedding {result['embed_seconds']:.1f} s: {result['embedded']} new "
                 f"frame(s), {result['cached']} from the cache, {len(result['variants'])} looks each)")
    if result["accepted"]:
        lines.append("A running daemon switches to it within seconds; undo with --undo.")
    return "\n".join(lines)


# ---- evaluate -----------------------------------------------------------------------------------
def evaluate(argv: list) -> int:
    parser = argparse.ArgumentParser(prog="python -m device evaluate", formatter_class=FORMATTER,
                                     description="Score the bundle (with its current head) on a folder of class "
                                                 "folders, through the device's own code.")
    parser.add_argument("--bundle", required=True, help="bundle folder")
    parser.add_argument("--data", required=True, help="folder of class folders (DATA/<class>/*.jpg)")
    parser.add_argument("--model", default="int8", help="model format")
    parser.add_argument("--out", default="evaluation", help="folder for report.md and mistakes.png")
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1, help="interpreter threads")
    add_region_arguments(parser, "score this region: the frames labelled for it (DATA/regions.jsonl), cropped to "
                                 "its box, with its head; default: the whole frame")
    args = parser.parse_args(argv)
    from device.teach.evaluate import contact_sheet
    from device.teach.evaluate import evaluate as run_evaluate

    program = "edgecam evaluate"
    out = Path(args.out)
    try:
        report = run_evaluate(args.bundle, args.data, args.model, args.threads, _region(args), args.state_dir)
        out.mkdir(parents=True, exist_ok=True)
        text = report.markdown()
        sheet = contact_sheet(report.mistakes, out / "mistakes.png")
        if sheet is not None:
            text += f"\nMistakes: {sheet.name} (truth -> prediction, confidence).\n"
        (out / "report.md").write_text(text, encoding="utf-8")
    except ValueError as error:
        return exitcodes.fail(program, str(error), exitcodes.BAD_INPUT)
    except OSError as error:  # --out: under a file, read-only, a full disk
        return exitcodes.fail(program, f"--out: {exitcodes.describe(error, str(out))}", exitcodes.code_for(error))
    print(text)
    print(f"wrote {out / 'report.md'}" + (f" and {sheet}" if sheet else ""), file=sys.stderr)
    return 0
