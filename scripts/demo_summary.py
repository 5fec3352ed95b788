"""Read the daemon's JSON lines (stdin) while it replays held-out images; print what it sees, then a summary.

The true class of a replayed file is its folder name (DATA/test/<class>/x.png), so the summary can say how
often the device got it right, per class."""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter
from pathlib import Path


def main() -> int:
    bundle = sys.argv[1] if len(sys.argv) > 1 else "artifacts/rps"
    results, correct, per_class = [], 0, Counter()
    per_class_correct = Counter()
    for line in sys.stdin:
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "label" not in result:
            continue
        results.append(result)
        truth = Path(result["item"]).parent.name if result.get("item") else None
        hit = truth is not None and result["raw_label"] == truth
        correct += hit
        if truth:
            per_class[truth] += 1
            per_class_correct[truth] += hit
        if len(results) <= 5 or len(results) % 50 == 0:
            where = f"{Path(result['item']).parent.name}/{Path(result['item']).name}" if result.get("item") else ""
            print(f"  frame {result['frame']:4d} {where:28s} -> {result['raw_label']:9s} "
                  f"({result['confidence']:.2f}, smoothed: {result['label']}) {result['latency_ms']:.2f} ms",
                  flush=True)
    if not results:
        print("the daemon produced no results (see its messages above)", file=sys.stderr)
        return 1
    latencies = [r["latency_ms"] for r in results]
    print(f"\n{len(results)} held-out frames classified on the device pipeline with the "
          f"{results[0]['model']} model of {bundle}")
    if per_class:
        print(f"  accuracy: {correct / sum(per_class.values()):.1%} (" + ", ".join(
            f"{name} {per_class_correct[name]}/{count}" for name, count in sorted(per_class.items())) + ")")
    print(f"  latency per frame: median {statistics.median(latencies):.2f} ms, max {max(latencies):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
