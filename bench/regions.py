"""Regions, measured (issue 27): the cost of 1, 2 and 4 regions a frame, and a region's teach against the whole
frame's on the same photos.

    python -m bench.regions --bundle artifacts/rps            # cost rows (also in make bench)
    python -m bench.regions --bundle B --compare-teach DATA    # DATA/train and DATA/test class folders of photos

Cost (each case's fastest of 7 rounds, the cases taken in turn: a shared machine disturbs them alike):
RegionReader.process (crop views of a 640x480 frame, resize, invoke, head, smoothing, the result dicts)
per frame for N regions, beside N raw invokes (set_tensor, invoke, get_tensor) and one raw invoke of an input of
batch N (resize_tensor_input on a second interpreter: what batching would cost, if it were used).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COUNTS = (1, 2, 4)
BOXES = {1: ["0,0,1,1"], 2: ["0,0,0.5,1", "0.5,0,0.5,1"],
         4: ["0,0,0.5,0.5", "0.5,0,0.5,0.5", "0,0.5,0.5,0.5", "0.5,0.5,0.5,0.5"]}


def _interleaved_ms(cases: dict, repetitions: int, rounds: int = 7) -> dict:
    """{name: ms per call}: the cases measured in turn, round after round (so a busy moment of a shared machine
    falls on all of them alike), each case's fastest round (the least disturbed)."""
    for case in cases.values():
        for _ in range(10):
            case()
    best = {name: float("inf") for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            start = time.perf_counter()
            for _ in range(repetitions):
                case()
            best[name] = min(best[name], (time.perf_counter() - start) / repetitions * 1000)
    return best


def measure_cost(bundle, threads: int, model: str = "int8", repetitions: int = 200) -> dict:
    """{N: {"regions_ms", "raw_ms" (N single invokes), "batch_ms" (one batch-N invoke)}} on a 640x480 frame."""
    from device.regions import parse_region
    from device.regions.serve import RegionReader, load_heads
    from device.runtime import import_runtime
    from device.teach.teaching import load_classifier_any

    classifier = load_classifier_any(bundle, model, threads, state_dir=tempfile.mkdtemp(prefix="bench-regions-"))
    loaded = classifier.model
    frame = np.random.default_rng(0).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    single = np.zeros(loaded.input_shape, loaded.input_dtype)
    interpreter = loaded.interpreter
    _, interpreter_class, _ = import_runtime(loaded.runtime)
    content = Path(loaded.path).read_bytes()
    cases = {}
    for count in COUNTS:
        regions = [parse_region(f"r{number}={box}") for number, box in enumerate(BOXES[count])]
        reader = RegionReader(classifier, load_heads(classifier, regions, bundle, None, 1, 0.0))

        def raw(count=count):
            for _ in range(count):
                interpreter.set_tensor(loaded.input_index, single)
                interpreter.invoke()
                interpreter.get_tensor(loaded.output_index)

        batched = interpreter_class(model_content=content, num_threads=threads)
        batched.resize_tensor_input(loaded.input_index, (count, *loaded.input_shape[1:]))
        batched.allocate_tensors()
        batch = np.zeros((count, *loaded.input_shape[1:]), loaded.input_dtype)

        def one_batch(batched=batched, batch=batch):
            batched.set_tensor(loaded.input_index, batch)
            batched.invoke()
            batched.get_tensor(loaded.output_index)

        cases.update({(count, "regions_ms"): lambda reader=reader: reader.process(frame), (count, "raw_ms"): raw,
                      (count, "batch_ms"): one_batch})
    measured = _interleaved_ms(cases, repetitions)
    return {count: {key: measured[(count, key)] for key in ("regions_ms", "raw_ms", "batch_ms")} for count in COUNTS}


def cost_rows(bundle, threads: int) -> list:
    """make bench's rows: per frame for 1, 2 and 4 regions, the ratio to N raw invokes and to one region."""
    from bench.table import row

    print("bench: regions (1, 2, 4 boxes of a 640x480 frame)...", file=sys.stderr)
    cost = measure_cost(bundle, threads)
    one = cost[1]["regions_ms"]
    rows = []
    for count, entry in cost.items():
        ratio = entry["regions_ms"] / one
        rows.append(row(f"regions: {count} region{'s' * (count > 1)} per 640x480 frame (int8, crop + resize + "
                        "invoke + head + smoothing)",
                        f"{entry['regions_ms']:.3f} ms = {entry['regions_ms'] / entry['raw_ms']:.2f}x {count} raw "
                        f"invoke(s) ({entry['raw_ms']:.3f} ms); {ratio:.2f}x one region; one batch-{count} invoke "
                        f"{entry['batch_ms']:.3f} ms",
                        "2 regions <= 2.1x one region" if count == 2 else None,
                        ratio <= 2.1 if count == 2 else None))
    return rows


def compare_teach(bundle, data, threads: int = 1, per_class: int = 20) -> dict:
    """A region taught on PER_CLASS photos a class (each pasted as the left half of a two-photo frame, the right
    half another class's photo) against the whole-frame teach on the same photos alone; both scored on DATA/test
    (the region on test photos pasted the same way, the whole frame on the photos alone), through the device's
    own code. -> {"region": accuracy, "whole": accuracy, "untaught_region": ..., "untaught_whole": ...}."""
    from PIL import Image

    from bench.teach import light_copy
    from device.regions import make_region
    from device.regions.serve import RegionReader, load_heads
    from device.sources import ImagesSource
    from device.teach import regionlabels
    from device.teach.dataset import Dataset
    from device.teach.teaching import load_classifier_any, teach

    data = Path(data)
    labels = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
    train = {label: sorted((data / "train" / label).iterdir())[:per_class] for label in labels}
    test = {label: sorted((data / "test" / label).iterdir()) for label in labels}
    left = make_region("left", [0, 0, 0.5, 1])
    work = Path(tempfile.mkdtemp(prefix="bench-regions-teach-"))
    try:
        copy = light_copy(bundle, work / "bundle")
        source = ImagesSource(paths=[p for group in (train, test) for ps in group.values() for p in ps], loop=False)
        source.open()
        whole, regional = work / "whole", Dataset(work / "regional", limit_bytes=10**10, min_free_bytes=0)

        def partner(label, index, pool):
            other = labels[(labels.index(label) + 1 + index) % len(labels)]
            return pool[other][index % len(pool[other])]

        def pair(path, other):
            a, b = source.decode(path), source.decode(other)
            height = min(a.shape[0], b.shape[0])
            b = np.asarray(Image.fromarray(b).resize((a.shape[1], a.shape[0]))) if b.shape != a.shape else b
            return np.concatenate([a[:height], b[:height]], axis=1)

        for label, paths in train.items():
            (whole / label).mkdir(parents=True)
            for index, path in enumerate(paths):
                shutil.copy(path, whole / label / path.name)
                regionlabels.save(regional, pair(path, partner(label, index, train)), {"left": label},
                                  {"left": left.box})

        def score(state, region):
            classifier = load_classifier_any(copy, "int8", threads, state, region)
            reader = RegionReader(classifier, load_heads(classifier, [left], copy, state, 1, 0.0)) if region else None
            correct = total = 0
            for label, paths in test.items():
                for index, path in enumerate(paths):
                    if region is None:
                        probabilities = classifier.probabilities(source.decode(path))
                        names = classifier.labels
                    else:
                        probabilities = reader.probabilities(pair(path, partner(label, index, test)))[0]
                        names = reader.heads[0].labels
                    correct += names[int(np.argmax(probabilities))] == label
                    total += 1
            return correct / total

        found = {"untaught_whole": score(work / "s-whole", None), "untaught_region": score(work / "s-region", left)}
        whole_result = teach(copy, whole, "int8", force=True, threads=threads, state_dir=work / "s-whole")
        region_result = teach(copy, regional.root, "int8", force=True, threads=threads, state_dir=work / "s-region",
                              region=left)
        found.update(whole=score(work / "s-whole", None), region=score(work / "s-region", left),
                     whole_crossval=whole_result["accuracy_new"], region_crossval=region_result["accuracy_new"],
                     per_class=per_class, test_frames=sum(len(p) for p in test.values()))
        return found
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    import os

    parser = argparse.ArgumentParser(prog="python -m bench.regions", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bundle", default="artifacts/rps", help="converted bundle with an embedding output")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="interpreter threads")
    parser.add_argument("--compare-teach", default=None, metavar="DATA",
                        help="also teach a region and the whole frame on DATA/train photos, score on DATA/test")
    parser.add_argument("--per-class", type=int, default=20, help="photos a class to teach on")
    args = parser.parse_args(argv)
    from bench.table import plain

    print(plain(cost_rows(args.bundle, args.threads)))
    if args.compare_teach:
        print(json.dumps(compare_teach(args.bundle, args.compare_teach, args.threads, args.per_class)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
