"""``python -m device capture | teach | evaluate``: the teach loop from a shell (over ssh, headless).

    python -m device capture --bundle B --source picamera2 --label paper --count 40 --interval 0.5
    python -m device teach --bundle B --data /var/lib/edgecam/dataset     # --force, --undo
    python -m device evaluate --bundle B --data DIR                       # Markdown + mistakes.png

Exit codes: 0 ok (teach: the head was accepted, or nothing changed since it was taught), 1 teach refused a worse head (quality), 2 bad input or
configuration (not retried), 3 a temporary condition worth a retry (the camera busy, the bundle locked).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

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
                                     description="Record labelled camera frames into the data set (the full "
                                                 "camera frame as JPEG, with the model's reading in index.jsonl).")
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
    from device.teach.dataset import Dataset, DatasetError, DatasetFull, check_class_name, default_root
    from device.teach.teaching import load_classifier_any

    try:
        check_class_name(args.label)
        classifier = load_classifier_any(args.bundle, args.model)
        root = args.dataset or default_root(classifier.manifest.name)
        dataset = Dataset(root, int(args.dataset_limit_mb * 1e6), int(args.min_free_mb * 1e6))
        dataset.add_class(args.label)
        source = open_source(args.source, (classifier.model.width, classifier.model.height), False)
    except ValueError as error:
        print(f"edgecam capture: {error}", file=sys.stderr)
        return 2
    try:
        source.open()
        for number in range(args.count):
            if number:
                time.sleep(args.interval)
            frame = source.read()
            probabilities = classifier.probabilities(frame)
            best = int(probabilities.argmax())
            reading = {"label": classifier.labels[best], "confidence": round(float(probabilities[best]), 4)}
            relative, count = dataset.save(frame, args.label, args.source, classifier.name, reading)
            print(json.dumps({"file": relative, "count": count, "reading": reading}), flush=True)
    except DatasetFull as error:
        print(f"edgecam capture: recording stopped: {error}", file=sys.stderr)
        return 2
    except DatasetError as error:
        print(f"edgecam capture: {error}", file=sys.stderr)
        return 2
    except EndOfStream as error:
        print(f"edgecam capture: the source ran out of frames ({error}); ask for fewer with --count.",
              file=sys.stderr)
        return 2
    except (SourceError, OSError) as error:  # a busy or unplugged camera: worth a retry
        print(f"edgecam capture: the source failed ({error}); try again when the camera is free.", file=sys.stderr)
        return 3
    finally:
        source.close()
    print(f"recorded {args.count} frames of {args.label} into {dataset.root}", file=sys.stderr)
    return 0


# ---- teach --------------------------------------------------------------------------------------
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
    parser.add_argument("--model", default="int8", help="model format that embeds the frames (as the daemon runs)")
    parser.add_argument("--force", action="store_true", help="keep the new head even when it scores worse")
    parser.add_argument("--undo", action="store_true", help="go back one head revision instead of teaching")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds and the fit")
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
    except ValueError as error:
        if args.json:
            print(json.dumps({"error": str(error)}))
        print(f"edgecam teach: {error}", file=sys.stderr)
        return 3 if "is being written by another" in str(error) else 2
    if args.json:
        print(json.dumps(result))
    else:
        print(summary(result))
    return 0 if result["accepted"] or result.get("unchanged") else 1


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
    args = parser.parse_args(argv)
    from device.teach.evaluate import contact_sheet
    from device.teach.evaluate import evaluate as run_evaluate

    try:
        report = run_evaluate(args.bundle, args.data, args.model, args.threads)
    except ValueError as error:
        print(f"edgecam evaluate: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = report.markdown()
    sheet = contact_sheet(report.mistakes, out / "mistakes.png")
    if sheet is not None:
        text += f"\nMistakes: {sheet.name} (truth -> prediction, confidence).\n"
    (out / "report.md").write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {out / 'report.md'}" + (f" and {sheet}" if sheet else ""), file=sys.stderr)
    return 0
