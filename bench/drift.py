"""``python -m bench.drift``: how device/drift.py behaves on real frames, through the real interpreter.

    python -m bench.drift --bundle B --in-domain DIR --shifted NAME=DIR [--shifted NAME=DIR] [--head R]

Embeds every image of the folders once with the bundle's model and the head that serves (the daemon's own
Classifier), then replays them through a Monitor (window: --window-frames, every frame counted):

- false alarms: per 10,000 in-domain frames drawn at random (with replacement) from DIR, per seed, the
  times the state left ``ok``;
- frames to detection: after a window of in-domain frames, frames of each shifted set until ``watch`` and
  until ``drifted``;
- the cost: the drift step per frame against the pipeline's per frame (Classifier.process), medians.
Prints one JSON object. Host side; the device never imports it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


def embed_folder(classifier, folder) -> tuple:
    """Every image under FOLDER (class folders) -> (embeddings [N, size], own top-1 confidences [N], seconds of
    Classifier.process per frame [N])."""
    from device.layout import find_images
    from device.sources import ImagesSource

    paths = sorted(find_images(Path(folder)))
    source = ImagesSource(paths=paths, loop=False)
    source.open()
    embeddings, confidences, seconds = [], [], []
    for path in paths:
        frame = source.decode(path)
        start = time.perf_counter()
        classifier.process(frame)
        seconds.append(time.perf_counter() - start)
        embeddings.append(np.array(classifier.embedding))
        confidences.append(float(np.max(classifier.frame_probabilities)))
    return np.stack(embeddings), np.asarray(confidences), np.asarray(seconds)


def replay(monitor, embeddings, confidences, order, start: int = 0) -> list:
    """Feed frames ORDER (indices) through MONITOR, one a second from START -> the state after each."""
    states = []
    for offset, index in enumerate(order):
        monitor.observe(embeddings[index], confidences[index], now=float(start + offset))
        states.append(monitor.state)
    return states


def false_alarms(reference, embeddings, confidences, frames: int, seed: int, window: int) -> tuple:
    """-> (times the state left ok, frames not ok) over FRAMES in-domain frames drawn with SEED."""
    from device.drift import Monitor

    order = np.random.default_rng(seed).integers(0, len(embeddings), frames)
    states = replay(Monitor(reference, window, 0.0), embeddings, confidences, order)
    alarms = sum(1 for before, after in zip(["ok"] + states, states) if before == "ok" and after != "ok")
    return alarms, sum(state != "ok" for state in states)


def detection(reference, domain, shifted, seed: int, window: int) -> dict:
    """A full window of in-domain frames, then shifted ones -> frames until watch and until drifted (None: never
    within 3 windows)."""
    from device.drift import Monitor

    rng = np.random.default_rng(seed)
    monitor = Monitor(reference, window, 0.0)
    replay(monitor, *domain, rng.integers(0, len(domain[0]), window))
    states = replay(monitor, *shifted, rng.integers(0, len(shifted[0]), 3 * window), start=window)
    first = {state: next((i + 1 for i, s in enumerate(states) if s in wanted), None)
             for state, wanted in (("watch", ("watch", "drifted")), ("drifted", ("drifted",)))}
    return first


def cost(classifier, embeddings, confidences, repeats: int = 2000) -> float:
    """Median seconds of one drift step (score + window), device/drift.py's observe()."""
    from device import drift

    monitor = drift.Monitor(classifier.drift.reference, 300, 300.0)
    timings = []
    for index in range(repeats):
        classifier.embedding = embeddings[index % len(embeddings)]
        start = time.perf_counter()
        drift.observe(monitor, classifier, now=float(index))
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def main(argv=None) -> int:
    from device import drift
    from device.daemon import Daemon, Options

    parser = argparse.ArgumentParser(prog="python -m bench.drift", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bundle", required=True, help="converted bundle with an embedding output")
    parser.add_argument("--model", default="int8", help="model format")
    parser.add_argument("--state-dir", default=None, help="state folder of the taught head to measure (default: "
                                                          "the bundle's own head, unless one is taught beside it)")
    parser.add_argument("--in-domain", required=True, help="class folders of the scene the head was taught")
    parser.add_argument("--shifted", action="append", default=[], help="NAME=DIR: class folders of another scene")
    parser.add_argument("--frames", type=int, default=10_000, help="in-domain frames per seed")
    parser.add_argument("--seeds", type=int, default=3, help="seeds")
    parser.add_argument("--window-frames", type=int, default=300, help="the monitor's window")
    args = parser.parse_args(argv)
    daemon = Daemon(Options(bundle=args.bundle, model=args.model, source="images:unused", threads=1,
                            http="off", state_dir=args.state_dir, drift_window_seconds=0.0))
    classifier = daemon.load()
    reference = classifier.drift.reference
    if reference is None:
        raise SystemExit(f"bench.drift: no drift reference: {classifier.drift.note}")
    domain = embed_folder(classifier, args.in_domain)
    result = {"bundle": args.bundle, "model": args.model, "reference": reference.source,
              "window_frames": args.window_frames, "in_domain_images": len(domain[0]), "seeds": args.seeds}
    alarms = [false_alarms(reference, domain[0], domain[1], args.frames, seed, args.window_frames)
              for seed in range(args.seeds)]
    result["false_alarms_per_10000"] = [round(a * 10_000 / args.frames, 2) for a, _ in alarms]
    result["frames_not_ok_per_10000"] = [round(n * 10_000 / args.frames, 2) for _, n in alarms]
    scores = np.array([drift.frame_score(reference, embedding) for embedding in domain[0]])
    result["in_domain_scores"] = {"median": round(float(np.median(scores)), 3), "max": round(float(scores.max()), 3),
                                  "far_fraction": round(float(np.mean(scores > drift.FAR_RATIO)), 4)}
    for text in args.shifted:
        name, folder = text.split("=", 1)
        shifted = embed_folder(classifier, folder)
        shifted_scores = [drift.frame_score(reference, embedding) for embedding in shifted[0]]
        result[f"shifted:{name}"] = {"images": len(shifted[0]), "median_score": round(float(np.median(shifted_scores)), 3),
                                     "to_detection": [
            detection(reference, domain[:2], shifted[:2], seed, args.window_frames) for seed in range(args.seeds)]}
    step = cost(classifier, domain[0], domain[1])
    pipeline = float(np.median(domain[2]))
    result["cost"] = {"drift_step_us": round(step * 1e6, 2), "pipeline_ms": round(pipeline * 1e3, 4),
                      "share": round(step / pipeline, 4)}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
