"""``python -m device regions``: list or change the device's regions (STATE/regions.json, docs/regions.md) from a
shell; a running daemon whose regions come from the state folder reads the change within a second.

    python -m device regions                                  # list (from STATE/regions.json, else --regions-file)
    python -m device regions --set door=0.1,0.2,0.3,0.5 --set drive=0.4,0.45,0.6,0.55 [--repeat 3]
    python -m device regions --remove door

Exit codes (device/exitcodes.py): 0 ok, 2 bad input (a bad box, no state folder).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from device import exitcodes


def main(argv: list) -> int:
    from device.regions import region_flag as region
    from device.validators import positive_int

    parser = argparse.ArgumentParser(prog="python -m device regions", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--set", action="append", type=region, default=[], metavar="NAME=X,Y,W,H",
                        help="add or move a region (repeatable)")
    parser.add_argument("--remove", action="append", default=[], metavar="NAME", help="remove a region (repeatable)")
    parser.add_argument("--repeat", type=positive_int, default=None,
                        help="for the regions --set: a new label only after this many identical results in a row "
                             "(default: keep the region's, else 1)")
    parser.add_argument("--regions-file", default=None, metavar="TOML",
                        help="the unit's settings file, listed when the state folder has no regions (default: none)")
    parser.add_argument("--state-dir", default=None,
                        help="state folder (default: $EDGECAM_STATE_DIR, systemd's $STATE_DIRECTORY, /var/lib/edgecam "
                             "when this user may write it)")
    parser.add_argument("--json", action="store_true", help="print the regions as one JSON object")
    args = parser.parse_args(argv)
    from device.regions import RegionError, resolve, save_state
    from device.state import device_state_dir

    program = "edgecam regions"
    state_dir = device_state_dir(args.state_dir)
    try:
        regions, origin = resolve([], args.regions_file, state_dir)
        if args.set or args.remove:
            if state_dir is None:
                raise RegionError("regions are kept in the state folder: pass --state-dir DIR (or set "
                                  "EDGECAM_STATE_DIR).")
            unknown = sorted(set(args.remove) - {r.name for r in regions})
            if unknown:
                raise RegionError(f"--remove {', '.join(unknown)}: no such region (the device has "
                                  f"{', '.join(r.name for r in regions) or 'none'}).")
            kept = {r.name: r for r in regions if r.name not in args.remove}
            for new in args.set:
                old = kept.get(new.name)
                repeat = args.repeat or (old.repeat if old is not None else 1)
                kept[new.name] = replace(old or new, x=new.x, y=new.y, width=new.width, height=new.height,
                                         repeat=repeat)
            regions, origin = list(kept.values()), "state"
            save_state(state_dir, regions)
    except (RegionError, OSError) as error:
        return exitcodes.fail(program, str(error), exitcodes.BAD_INPUT)
    if args.json:
        print(json.dumps({"regions": [r.describe() for r in regions], "origin": origin}))
    elif not regions:
        print("no regions: the whole frame is read (add one with --set NAME=X,Y,W,H)")
    else:
        for entry in regions:
            print(f"{entry.spec()}  repeat {entry.repeat}" + (f", smoothing {entry.smoothing}" if entry.smoothing else "")
                  + (f", threshold {entry.threshold:g}" if entry.threshold is not None else ""))
    return 0
