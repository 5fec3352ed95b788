"""``python -m device dataset mv | rm | restore``: many frames of a Teach data set at once, from a shell.

    python -m device dataset mv --data /var/lib/edgecam/dataset --to paper rock/20261129-010203-0007.jpg ...
    python -m device dataset rm --data DIR rock/20261129-010203-0007.jpg .uncertain/20261129-010203-0008.jpg
    python -m device dataset restore --data DIR BATCH        # the newest rm undone (rm prints its BATCH)

A frame is named by its path inside the data set (as /api/dataset lists it) or by a path to the file itself.
Each frame moves or goes by one rename (atomic per frame), at most 500 in one command; one JSON line tells
what happened to each. Exit codes (device/exitcodes.py): 0 every frame done, 2 bad input (an unknown class or
frame: the others are still done, the failures listed) or a full disk (it does not pass by itself).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from device import exitcodes

FORMATTER = argparse.ArgumentDefaultsHelpFormatter


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m device dataset", formatter_class=FORMATTER,
                                   description="Move, delete or restore many frames of a Teach data set at once.")
    commands = main.add_subparsers(dest="command", required=True)
    move = commands.add_parser("mv", formatter_class=FORMATTER, help="move frames into a class")
    move.add_argument("--to", required=True, help="the class the frames move into (it must exist)")
    remove = commands.add_parser("rm", formatter_class=FORMATTER, help="delete frames (undo with restore)")
    for command in (move, remove):
        command.add_argument("--data", required=True, help="the data set folder (the daemon's --dataset)")
        command.add_argument("files", nargs="+", help="frames: CLASS/NAME.jpg, .uncertain/ID, or paths to them")
    restore = commands.add_parser("restore", formatter_class=FORMATTER, help="undo the newest rm")
    restore.add_argument("--data", required=True, help="the data set folder (the daemon's --dataset)")
    restore.add_argument("batch", help="the undo id that rm printed")
    return main


def inside(dataset_root: Path, name: str) -> str:
    """NAME as a data-set path: unchanged when it is one, else the path of an existing file inside the set.
    A link is named as the link (its folder is resolved, never the link itself: its target may lie in
    another class)."""
    path = Path(name)
    if os.path.lexists(path) and (path.is_absolute() or not os.path.lexists(dataset_root / name)):
        try:
            folder = Path(os.path.realpath(path.parent))
            return (folder / path.name).relative_to(os.path.realpath(dataset_root)).as_posix()
        except ValueError:
            return name  # outside: the data set's path check (device/teach/dataset/paths.py) says so
    return name


def main(argv: list) -> int:
    from device.teach.dataset import Dataset, DatasetError, DatasetFull

    args = parser().parse_args(argv)
    try:
        if not Path(args.data).is_dir():
            raise DatasetError(f"--data {args.data} is not a folder: name the data set (the daemon's --dataset).")
        dataset = Dataset(args.data, min_free_bytes=0)
        if args.command == "restore":
            result = dataset.restore(args.batch)
        else:
            files = [inside(dataset.root, name) for name in args.files]
            result = dataset.move(files, args.to) if args.command == "mv" else dataset.remove(files)
    except (DatasetFull, DatasetError) as error:  # a full disk is a 2 too: a retry cannot help (README: Exit codes)
        return exitcodes.fail("edgecam dataset", str(error), exitcodes.BAD_INPUT)
    print(json.dumps(result), flush=True)
    for failure in result.get("failed", []):
        print(f"edgecam dataset: {failure['file']}: {failure['error']}", file=sys.stderr)
    if result.get("undo"):
        print(f"edgecam dataset: undo with: python -m device dataset restore --data {args.data} {result['undo']}",
              file=sys.stderr)
    return 2 if result.get("failed") else 0
