"""``python -m bench.memory --bundle artifacts/rps``: where the daemon's resident memory is.

Runs the daemon as ``make bench``'s peak-RSS row does (int8, 640x480 frames from the image source, HTTP on),
and after FRAMES results prints VmHWM and the resident pages of /proc/PID/smaps grouped by mapping: a library
(site-packages by distribution), ``[heap]``, or ``[anon]`` (Python's objects, numpy's arrays, the interpreter's
tensors and packed weights). ``--python`` adds Python's own share, from tracemalloc.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

from bench import measure


def resident_by_mapping(pid: int) -> Counter:
    """/proc/PID/smaps -> {mapping name: resident kB}."""
    groups: Counter = Counter()
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header line
            path = fields[5] if len(fields) > 5 else "[anon]"
            if "site-packages/" in path:
                name = "site-packages/" + path.split("site-packages/", 1)[1].split("/")[0]
            else:
                name = path if path.startswith("[") else Path(path).name
        elif fields and fields[0] == "Rss:":
            groups[name] += int(fields[1])
    return groups


def python_memory(bundle: Path, threads: int, folder: Path, top: int) -> list:
    """tracemalloc over one in-process ``python -m device ... --once`` replay of FOLDER -> report lines."""
    import tracemalloc

    tracemalloc.start()
    from device import cli

    before = tracemalloc.take_snapshot()
    cli.main(["--bundle", str(bundle), "--model", "int8", "--threads", str(threads), "--source", f"images:{folder}",
              "--once", "--max-fps", "0", "--http", "127.0.0.1:0", "--emit", "off", "--log-level", "warning"])
    current, peak = tracemalloc.get_traced_memory()
    lines = [f"Python's own allocations (tracemalloc): {current / 2**20:.1f} MB at the end, {peak / 2**20:.1f} MB "
             "at the peak; by file, grown during the run:"]
    for stat in tracemalloc.take_snapshot().compare_to(before, "filename")[:top]:
        lines.append(f"{stat.size / 2**20:8.1f} MB  {stat.traceback[0].filename}")
    tracemalloc.stop()
    return lines


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bundle", default="artifacts/rps", help="converted bundle with an int8 model")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="interpreter threads")
    parser.add_argument("--frames", type=int, default=300, help="results before the memory is read")
    parser.add_argument("--top", type=int, default=15, help="mappings listed")
    parser.add_argument("--python", action="store_true",
                        help="also replay the frames once in this process under tracemalloc (Python's share)")
    args = parser.parse_args(argv)
    bundle = Path(args.bundle)
    folder = measure.frame_folder(bundle, (640, 480))
    run = measure.DaemonRun(bundle, f"images:{folder}", "int8", args.threads)
    try:
        run.wait_for(args.frames)
        peak, now = run.memory_kb("VmHWM") / 1024, run.memory_kb("VmRSS") / 1024
        groups = resident_by_mapping(run.process.pid)
    finally:
        run.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"daemon, int8, 640x480 frames, HTTP on, after {args.frames} results: VmHWM {peak:.1f} MB, VmRSS "
          f"{now:.1f} MB; resident by mapping (smaps total {sum(groups.values()) / 1024:.1f} MB):")
    for name, kilobytes in groups.most_common(args.top):
        print(f"{kilobytes / 1024:8.1f} MB  {name}")
    if args.python:
        folder = measure.frame_folder(bundle, (640, 480))
        try:
            print("\n".join(python_memory(bundle, args.threads, folder, args.top)))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
