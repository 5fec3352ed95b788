"""``python -m device capture | teach | evaluate``: the teach loop from a shell (over ssh, headless).

    python -m device capture --bundle B --source picamera2 --label paper --count 40 --interval 0.5
    python -m device teach --bundle B --data /var/lib/edgecam/dataset     # --force, --undo
    python -m device evaluate --bundle B --data DIR                       # Markdown + mistakes.png

Exit codes (device/exitcodes.py): 0 ok (teach: the head was accepted), 1 teach refused a worse head (quality),
2 bad input or configuration, a full disk (not retried), 3 a temporary condition worth a retry (the camera
busy, the bundle locked).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from device import exitcodes
from device.cli import non_negative_float, positive_int

FORMATTER = argparse.ArgumentDefaultsHelpFormatter


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
    args = parser.parse_args(argv)
    from device.sources import EndOfStream, SourceError, open_source
    from device.teach.dataset import Dataset, DatasetFull, check_class_name, default_root
    from device.teach.teaching import load_classifier_any

    program = "edgecam capture"
    try:
        check_class_name(args.label)
        classifier = load_classifier_any(args.bundle, args.model)
        root = args.dataset or default_root(classifier.manifest.name)
        dataset = Dataset(root, int(args.dataset_limit_mb * 1e6), int(args.min_free_mb * 1e6))
        dataset.add_class(args.label)
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
            probabilities = classifier.probabilities(frame)
            best = int(probabilities.argmax())
            reading = {"label": classifier.labels[best], "confidence": round(float(probabilities[best]), 4)}
            relative, count = dataset.save(frame, args.label, args.source, classifier.name, reading)
            print(json.dumps({"file": relative, "count": count, "reading": reading}), flush=True)
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
    print(f"recorded {args.count} frames of {args.label} into {dataset.root}", file=sys.stderr)
    return 0


# ---- teach --------------------------------------------------------------------------------------
def teach(argv: list) -> int:
    parser = argparse.ArgumentParser(prog="python -m device teach", formatter_class=FORMATTER,
                                     description="Fit a new classifier head on a data set's frames (numpy, on "
                                                 "this device) and keep it when it is no worse than the current one.")
    parser.add_argument("--bundle", required=True, help="bundle folder (converted with an embedding output)")
    parser.add_argument("--data", default=None,
                        help="data set: a folder of class folders (default: the same as capture's --dataset)")
    parser.add_argument("--model", default="int8", help="model format that embeds the frames (as the daemon runs)")
    parser.add_argument("--force", action="store_true", help="keep the new head even when it scores worse")
    parser.add_argument("--undo", action="store_true", help="go back one head revision instead of teaching")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out split and the fit")
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1, help="interpreter threads")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line (the daemon uses it)")
    args = parser.parse_args(argv)
    from device.manifest import load_manifest
    from device.teach import revisions
    from device.teach.dataset import default_root

    try:
        if args.undo:
            revision = revisions.undo(args.bundle)
            labels = revisions.describe(args.bundle, load_manifest(args.bundle))["labels"]
            kind = "the bundle's own" if revision == 0 else "taught"
            print(json.dumps({"revision": revision, "labels": labels}) if args.json else
                  f"now using head revision {revision} ({kind}): {', '.join(labels)}")
            return 0
        from device.teach.teaching import teach as run_teach

        data = args.data or default_root(load_manifest(args.bundle).name)
        result = run_teach(args.bundle, data, args.model, args.force, args.seed, args.threads,
                           progress=None if args.json else _progress("embedding"))
    except (ValueError, OSError) as error:  # OSError: the bundle's (or state folder's) disk is full, read-only...
        message = exitcodes.describe(error, f"into {args.bundle}") if isinstance(error, OSError) else str(error)
        if args.json:
            print(json.dumps({"error": message}))
        code = exitcodes.code_for(error) if isinstance(error, OSError) else \
            exitcodes.RETRY if "is being written by another" in message else exitcodes.BAD_INPUT
        return exitcodes.fail("edgecam teach", message, code)
    if args.json:
        print(json.dumps(result))
    else:
        print(summary(result))
    return 0 if result["accepted"] else 1


def summary(result: dict) -> str:
    current = result["accuracy_current"]
    lines = [f"held-out fifth ({result['heldout']} frames, trained on {result['trained']}): new head "
             f"{result['accuracy_new']:.1%}, current head (revision {result['current_revision']}) {current:.1%}",
             ("ACCEPTED: now head revision " if result["accepted"] else "REFUSED: still head revision ")
             + f"{result['revision']} ({', '.join(result['labels'])}); {result['reason']}",
             f"{result['seconds']:.1f} s (embedding {result['embed_seconds']:.1f} s)"]
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
    args = parser.parse_args(argv)
    from device.teach.evaluate import contact_sheet
    from device.teach.evaluate import evaluate as run_evaluate

    program = "edgecam evaluate"
    out = Path(args.out)
    try:
        report = run_evaluate(args.bundle, args.data, args.model, args.threads)
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
