"""Drift per region, measured: what each region's drift monitor adds to a frame (docs/drift.md "Per region").

    python -m bench.regiondrift --bundle B      # B converted with parity measured (its tflite/drift.npz)

RegionReader.process on a 640x480 frame for 1, 2 and 4 regions, read by the bundle's own head, without and with
a drift monitor per region (the embedding from the same invoke, the score, the window), each case's fastest of
7 rounds taken in turn (bench/regions.py _interleaved_ms).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np


def measure(bundle, threads: int = 1, model: str = "int8", repetitions: int = 200) -> dict:
    """{N: {"plain_ms", "drift_ms", "ratio"}} per frame for N regions."""
    from bench.regions import BOXES, COUNTS, _interleaved_ms
    from device import drift
    from device.regions import parse_region
    from device.regions.serve import RegionReader, load_heads
    from device.teach.teaching import load_classifier_any

    classifier = load_classifier_any(bundle, model, threads, state_dir=tempfile.mkdtemp(prefix="bench-regiondrift-"))
    frame = np.random.default_rng(0).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    cases = {}
    for count in COUNTS:
        regions = [parse_region(f"r{number}={box}") for number, box in enumerate(BOXES[count])]
        plain = RegionReader(classifier, load_heads(classifier, regions, bundle, None, 1, 0.0))
        watched = RegionReader(classifier, load_heads(classifier, regions, bundle, None, 1, 0.0))
        for state in watched.heads:
            state.drift = drift.monitor_for(bundle, classifier, state.store, drift.DEFAULT_WINDOW_FRAMES, 0.0,
                                            drift.region_scope(state.region.name), active=None)
            if state.drift.reference is None:
                raise SystemExit(f"bench.regiondrift: {state.drift.note}")
        cases[(count, "plain_ms")] = lambda reader=plain: reader.process(frame)
        cases[(count, "drift_ms")] = lambda reader=watched: reader.process(frame)
    measured = _interleaved_ms(cases, repetitions)
    rows = {}
    for count in COUNTS:
        plain_ms, drift_ms = measured[(count, "plain_ms")], measured[(count, "drift_ms")]
        rows[count] = {"plain_ms": round(plain_ms, 4), "drift_ms": round(drift_ms, 4),
                       "ratio": round(drift_ms / plain_ms, 3)}
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.regiondrift", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bundle", default="artifacts/rps", help="converted bundle with a drift reference")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for count, row in measure(args.bundle, args.threads).items():
        print(f"{count} region(s): {row['plain_ms']:.4f} ms a frame without drift, {row['drift_ms']:.4f} ms with a "
              f"monitor per region ({row['ratio']:.3f}x, +{(row['drift_ms'] - row['plain_ms']) * 1000 / count:.1f} us "
              "a region)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
