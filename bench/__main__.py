"""``python -m bench --bundle artifacts/rps`` (``make bench``): the daemon against the raw interpreter.

Prints one table (value, limit, PASS/FAIL) measured side by side in one run, with the machine it ran on,
and writes it next to the bundle (BUNDLE/bench.md; the tracked bench/results.md is the README's record and is
only written when named with --out). ``--cost`` adds the cost per architecture (bench/cost.py: multiply-adds,
parameters, int8 size and latency, Edge TPU readiness, accuracy). ``--check`` exits 1 when a limit is missed. Timings are never asserted
by the test suite: this is where they are measured.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
from pathlib import Path

from bench import measure
from bench import outputs as output_bench
from bench.table import plain, row

LIMITS = {"model_size": 1.10, "640x480": 1.5, "peak_rss_mb": 80.0, "cold_start_s": 1.5, "rss_growth_mb": 5.0}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bundle", default="artifacts/rps", help="converted bundle (int8 and float32 models)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="interpreter threads")
    parser.add_argument("--frames", type=int, default=1000, help="latency samples per case")
    parser.add_argument("--rss-frames", type=int, default=10_000, help="frames for the RSS growth check")
    parser.add_argument("--out", default=None, help="markdown file (default: BUNDLE/bench.md)")
    parser.add_argument("--cost", action="store_true",
                        help="add the cost table: the bundle's model and every architecture (bench/cost.py)")
    parser.add_argument("--candidate", action="append", default=None,
                        help="with --cost: ARCH[:ALPHA]@SIZE to measure untrained, repeatable (default: "
                             "bench/cost.py's list)")
    parser.add_argument("--format-seconds", type=float, default=60.0,
                        help="time for the rows per model format and thread count (each gets up to 200 frames)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a limit is missed")
    return parser.parse_args(argv)


def run(args) -> tuple:
    bundle = Path(args.bundle)
    from device.layout import MANIFEST
    from device.manifest import ManifestError, load_manifest

    try:
        manifest = load_manifest(bundle)
    except ManifestError as error:
        raise SystemExit(f"bench: {error}") from None
    missing = [f for f in ("int8", "float32") if f not in manifest.models]
    if missing:
        raise SystemExit(f"bench: {bundle / MANIFEST} has no {' or '.join(missing)} model: "
                         f"run python -m convert {bundle} first.")
    size = (manifest.input.width, manifest.input.height)
    print(f"bench: {bundle} ({manifest.name}, {size[0]}x{size[1]}), {args.threads} threads", file=sys.stderr)
    int8 = measure.latency(bundle, "int8", args.threads, args.frames)
    float32 = measure.latency(bundle, "float32", args.threads, args.frames)
    print("bench: MQTT output on vs off (a local Mosquitto)...", file=sys.stderr)
    mqtt = output_bench.mqtt_cost(bundle, "int8", args.threads, args.frames)
    model_folder = measure.frame_folder(bundle, size)
    vga_folder = measure.frame_folder(bundle, (640, 480))
    try:
        print("bench: cold start, peak RSS, RSS growth (daemon subprocesses)...", file=sys.stderr)
        cold = measure.cold_start(bundle, model_folder, args.threads)
        peak = measure.peak_rss(bundle, vga_folder, args.threads)
        base, growth = measure.rss_growth(bundle, model_folder, args.threads, args.rss_frames)
    finally:
        shutil.rmtree(model_folder, ignore_errors=True)
        shutil.rmtree(vga_folder, ignore_errors=True)
    small_ratio = int8["pipeline_model_size"] / int8["raw"]
    vga_ratio = int8["pipeline_640x480"] / int8["raw"]
    outputs_ratio = int8["with_outputs_model_size"] / int8["raw"]
    rows = [
        row("int8 raw interpreter (set_tensor/invoke/get_tensor)", f"{int8['raw']:.3f} ms"),
        row(f"int8 pipeline per frame, frames at {size[0]}x{size[1]}",
            f"{int8['pipeline_model_size']:.3f} ms ({small_ratio:.2f}x raw)", f"<= {LIMITS['model_size']}x raw",
            small_ratio <= LIMITS["model_size"]),
        row("int8 pipeline per frame, 640x480 frames",
            f"{int8['pipeline_640x480']:.3f} ms ({vga_ratio:.2f}x raw)", f"<= {LIMITS['640x480']}x raw",
            vga_ratio <= LIMITS["640x480"]),
        row(f"int8 pipeline + outputs (JSON line, SSE, stats), {size[0]}x{size[1]}",
            f"{int8['with_outputs_model_size']:.3f} ms ({outputs_ratio:.2f}x raw)"),
        drift_row(int8, size),
        row("float32 raw interpreter", f"{float32['raw']:.3f} ms"),
        row(f"float32 pipeline per frame, frames at {size[0]}x{size[1]}",
            f"{float32['pipeline_model_size']:.3f} ms "
            f"({float32['pipeline_model_size'] / float32['raw']:.2f}x raw)"),
        row("int8 speed-up over float32 (raw invoke)", f"{float32['raw'] / int8['raw']:.2f}x"),
        row("int8 size / float32 size",
            f"{int8['size_bytes'] / float32['size_bytes']:.2f} ({int8['size_bytes'] / 1e6:.2f} MB / "
            f"{float32['size_bytes'] / 1e6:.2f} MB)"),
        row("peak RSS of the daemon, int8, 640x480 frames, HTTP on", f"{peak:.1f} MB",
            f"<= {LIMITS['peak_rss_mb']:.0f} MB", peak <= LIMITS["peak_rss_mb"]),
        row("cold start to first result (median of 3)", f"{cold:.2f} s", f"<= {LIMITS['cold_start_s']} s",
            cold <= LIMITS["cold_start_s"]),
        row(f"RSS growth over {args.rss_frames:,} frames (image source)", f"{growth:+.2f} MB (from {base:.1f} MB)",
            f"<= {LIMITS['rss_growth_mb']:.0f} MB", growth <= LIMITS["rss_growth_mb"]),
    ]
    rows += mqtt_rows(mqtt)
    rows += format_rows(bundle, size, args.format_seconds)
    rows += teach_rows(bundle, args.threads)
    if manifest.embedding is not None:  # regions read with the embedding's heads (bench/regions.py)
        from bench.regions import cost_rows

        rows += cost_rows(bundle, args.threads)
    return rows, manifest


def drift_row(int8: dict, size: tuple) -> tuple:
    """The drift score and window (device/drift.py) per frame, against the pipeline's per-frame time."""
    name = f"int8 drift score + window per frame, {size[0]}x{size[1]} (goal < 3% of the pipeline)"
    if "drift_step" not in int8:
        return row(name, "not measured: the bundle has no drift reference (re-convert it without --skip-parity)")
    share = int8["drift_step"] / int8["pipeline_model_size"]
    return row(name, f"{int8['drift_step'] * 1000:.1f} us ({share:.1%} of the pipeline per frame)", "goal < 3%")


def format_rows(bundle: Path, size: tuple, seconds: float) -> list:
    """A row per model format and thread count (python -m device tune's measurement), then the tuner's choice."""
    print(f"bench: every model format x 1-{os.cpu_count()} threads, as python -m device tune measures...",
          file=sys.stderr)
    table, chosen, excluded = measure.formats(bundle, size, seconds=seconds)
    rows = []
    for entry in table:
        threads = f"{entry.threads} thread{'s' * (entry.threads > 1)}"
        name = f"{entry.format}, {threads}: pipeline per frame, {size[0]}x{size[1]}"
        if entry.median_ms is None:
            rows.append(row(name, f"not measured: {entry.error}"))
            continue
        note = f"; not a candidate: {excluded[entry.format]}" if entry.format in excluded else ""
        rows.append(row(name, f"{entry.median_ms:.3f} ms (IQR {entry.iqr_ms:.3f}, {entry.frames} frames{note})"))
    fastest = min((entry for entry in table if entry.median_ms is not None), key=lambda entry: entry.median_ms,
                  default=None)
    if fastest is not None:
        rows.append(row("fastest format and threads here", f"{fastest.format}, {fastest.threads} threads"))
    rows.append(row("python -m device tune would choose (passed parity; fewest threads within 5%)",
                    f"{chosen.format}, {chosen.threads} threads" if chosen else "nothing: no format passed parity"))
    return rows


def mqtt_rows(mqtt: dict | None) -> list:
    name = "int8 per-frame step, MQTT off / on (every result published, qos 0)"
    if mqtt is None:
        return [row(name, "not measured: needs mosquitto (scripts/system-deps.sh) and paho-mqtt")]
    off, on = mqtt["off"], mqtt["on"]
    return [
        row(f"{name}: inference thread", f"{off['step_ms']:.3f} ms / {on['step_ms']:.3f} ms "
            f"({on['step_ms'] / off['step_ms']:.2f}x)"),
        row(f"{name}: CPU incl. output threads", f"{off['cpu_ms']:.3f} ms / {on['cpu_ms']:.3f} ms "
            f"({on['cpu_ms'] / off['cpu_ms']:.2f}x)"),
    ]


def teach_rows(bundle: Path, threads: int) -> list:
    """Teaching on the device (bench/teach.py): embedding speed and one head fit, for 600 frames."""
    from bench.teach import TEACH_FRAMES, measure_teach

    print(f"bench: teaching ({TEACH_FRAMES} frames)...", file=sys.stderr)
    teach = measure_teach(bundle, threads)
    if not teach:
        return [row("teach: embedding output", "none: re-convert the bundle (python -m convert) to teach it")]
    return [row(f"teach: int8 frames embedded per second (640x480 frames, {teach['embedding']}-wide embedding)",
                f"{teach['embed_fps']:.0f} fps ({TEACH_FRAMES / teach['embed_fps']:.1f} s for {TEACH_FRAMES})"),
            row(f"teach: seconds to fit a head on {TEACH_FRAMES} frames x {teach['looks']} looks "
                "(numpy, 5-fold CV + final fit)",
                f"{teach['fit_seconds']:.2f} s")]


def markdown(rows, header: str) -> str:
    lines = [header, "", "| measurement | value | limit | |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {value} | {limit} | {verdict} |" for name, value, limit, verdict in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    rows, manifest = run(args)
    machine = measure.machine()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    header = (f"Measured by `python -m bench --bundle {args.bundle}{' --cost' if args.cost else ''}` ({manifest.name}, "
              f"{manifest.input.width}x{manifest.input.height}, {args.threads} threads) on {when}.\n"
              f"Machine: {machine}; load average {load:.1f} at the end of the run.")
    print(header)
    print(plain([("measurement", "value", "limit", "")] + rows))
    text = "# edgecam benchmark\n\n" + markdown(rows, header)
    if args.cost:
        from bench import cost

        costs = cost.cost_table(args.bundle, args.candidate or cost.DEFAULT_CANDIDATES, args.threads,
                                log=lambda line: print(line, file=sys.stderr))
        section = cost.markdown(costs)
        print("\ncost per frame (int8):\n" + section, end="")
        text += ("\n## Cost per frame\n\nint8 models, this machine, " f"{args.threads} threads; multiply-adds "
                 "counted from the TFLite graph.\n\n" + section)
    out = Path(args.out) if args.out else Path(args.bundle) / "bench.md"
    out.write_text(text)
    args.out = str(out)
    print(f"bench: table written to {args.out}", file=sys.stderr)
    failed = [r[0] for r in rows if r[3] == "FAIL"]
    return 1 if failed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
