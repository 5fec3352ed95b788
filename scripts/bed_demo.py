"""A bundle's device archive under a real systemd on Raspberry Pi OS's two bases (Debian trixie and bookworm), in
the systemd test bed (tests/systemd_bed.py): install.sh from offline wheels, the unit serving, a teach over the
Teach API accepted and served. Faked as in the bed: the camera (the bundle's held-out frames replayed) and the
Pi's CPU (x86_64). Root; `make bed-demo` after `make demo`.

    python scripts/bed_demo.py --bundle artifacts/rps --frames data/rps/test
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from systemd_bed import (  # noqa: E402 - the bed lives beside the tests
    EDGECAM_ARGS,
    FRAMES_INSIDE,
    RELEASES,
    SHARE,
    Container,
    _link_tree,
    build_archive,
    build_wheels,
    missing,
    unpack_rootfs,
)
from test_systemd_service import active_and_healthy, capture  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("artifacts/rps"), help="a converted bundle")
    parser.add_argument("--frames", type=Path, default=Path("data/rps/test"),
                        help="class folders of frames the stand-in camera replays (their names become classes)")
    args = parser.parse_args(argv)
    reason = missing()
    if reason or not (args.bundle / "manifest.json").is_file() or not args.frames.is_dir():
        print(f"bed-demo: {reason or 'need a converted --bundle and a --frames folder: make demo first'}",
              file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="edgecam-bed-demo-"))
    try:
        share = work / "share"
        share.mkdir()
        for release in RELEASES:
            _link_tree(build_wheels(release), share / f"wheels-{release}")
        shutil.copytree(args.frames, share / "frames")
        archive = build_archive(args.bundle, share / "bundle.tar.gz")
        print(f"archive {archive['id']}: {(share / 'bundle.tar.gz').stat().st_size / 1e6:.1f} MB")
        classes = sorted(path.name for path in args.frames.iterdir() if path.is_dir())
        for release in ("trixie", "bookworm"):
            rootfs = work / f"rootfs-{release}"
            unpack_rootfs(rootfs, release)
            with Container(rootfs, f"edgecam-bed-demo-{release}", share, release=release) as box:
                box.sh(f"cp -r {SHARE}/frames {FRAMES_INSIDE}")
                box.write("/etc/default/edgecam", f'EDGECAM_ARGS="{EDGECAM_ARGS}"\n', mode="0600")
                started = time.monotonic()
                said = [line for line in box.install("bundle.tar.gz").stdout.splitlines() if "install: on" in line]
                took = time.monotonic() - started
                box.wait_for(lambda: active_and_healthy(box), 60, "the release serving")
                model = box.http("GET", "/status")[1]["model"]
                print(f"{release}: {said[0] if said else ''}; install {took:.1f} s; serving {model['format']} "
                      f"{model['labels']}")
                for label in [*classes, "thumbs"]:  # thumbs: a class the shipped model does not know
                    capture(box, label, 6)
                status, answer = box.http("POST", "/api/teach", {"force": True}, timeout=300)
                print(f"{release}: teach over HTTP: {status} accepted={answer.get('accepted')} "
                      f"revision={answer.get('revision')}")
                if status != 200 or not answer.get("accepted"):
                    return 1
                box.wait_for(lambda: "thumbs" in box.http("GET", "/status")[1]["model"]["labels"], 60,
                             "the taught head serving")
                print(f"{release}: serves the taught head: {box.http('GET', '/status')[1]['model']['labels']}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
