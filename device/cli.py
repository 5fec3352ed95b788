"""``python -m device``: the command line. Spelled-out, typed flags with their defaults in --help.

``python -m device doctor ...`` hands over to device/doctor.py (imported only then).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from device.sinks import EMIT_MODES

SUBCOMMANDS = {"doctor": "device.doctor"}


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction between 0 and 1 (e.g. 0.98), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m device",
        description="Classify camera frames with an edgecam bundle, offline. Results go to stdout as JSON "
                    "lines and to a local HTTP API. Subcommands: doctor (check this device).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--bundle", required=True, default=argparse.SUPPRESS,
        help="bundle folder written by train/ and convert/ (holds manifest.json)")
    add("--model", default="int8",
        help="int8, float32, float16, dynamic, edgetpu, or a .tflite path; Edge TPU models take a device "
             "suffix such as edgetpu@usb:0 or model_int8_edgetpu.tflite@pci:0")
    add("--source", default="picamera2", help="picamera2[:N] | opencv:INDEX|PATH|URL | images:DIR")
    replay = parser.add_mutually_exclusive_group()
    replay.add_argument("--loop", dest="loop", action="store_true", default=argparse.SUPPRESS,
                        help="replay image folders and video files forever (the default)")
    replay.add_argument("--once", dest="loop", action="store_false", default=argparse.SUPPRESS,
                        help="replay image folders and video files once, then exit 0")
    add("--max-fps", type=non_negative_float, default=30.0, help="frame rate cap (0: as fast as possible)")
    add("--threads", type=positive_int, default=os.cpu_count() or 1, help="interpreter threads")
    add("--smoothing", type=positive_int, default=5, help="average probabilities over this many frames (1: off)")
    add("--threshold", type=probability, default=0.5, help="below this confidence the label is 'unknown'")
    add("--top-k", type=positive_int, default=3, help="classes listed in each result's top_k")
    add("--emit", choices=EMIT_MODES, default="every",
        help="stdout JSON lines: every frame, only when the label changes, or off")
    add("--http", default="127.0.0.1:8080",
        help="HOST:PORT of the HTTP API (/healthz /status /metrics /events), or 'off'; an address other "
             "than loopback needs --token")
    add("--token", default=argparse.SUPPRESS,
        help="bearer token the HTTP API requires (default: $EDGECAM_TOKEN if set, else none)")
    add("--log-file", default=argparse.SUPPRESS,
        help="also write results and events to this rotating log file (default: none)")
    add("--log-max-bytes", type=positive_int, default=10_000_000, help="rotate the log file at this size")
    add("--log-backups", type=positive_int, default=3, help="rotated log files kept")
    add("--log-emit", choices=EMIT_MODES, default="change",
        help="results in the log file: every frame, label changes (spares a Pi's SD card), or off")
    add("--log-level", choices=("debug", "info", "warning", "error"), default="info", help="stderr verbosity")
    return parser


def skip_tls_support() -> None:
    """The daemon is offline and never speaks TLS, but http.server imports http.client, which imports ssl
    and maps OpenSSL (about 5 MB of the 80 MB RSS budget) just in case. Import http.client once with ssl
    hidden, so it leaves HTTPS out; ssl itself stays importable for anything that asks for it later.
    Done only here, in the daemon process's entry point, and only if nothing has imported them yet."""
    if "http.client" in sys.modules or "ssl" in sys.modules:
        return
    sys.modules["ssl"] = None  # an import of ssl now raises ImportError, which http.client tolerates
    try:
        import http.client  # noqa: F401
    finally:
        del sys.modules["ssl"]


def main(argv: list | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        import importlib
        import importlib.util

        module = SUBCOMMANDS[argv[0]]
        if importlib.util.find_spec(module) is None:
            print(f"edgecam: '{argv[0]}' is not part of this copy of device/ ({module} is missing).",
                  file=sys.stderr)
            return 2
        return importlib.import_module(module).main(argv[1:])
    args = build_parser().parse_args(argv)
    skip_tls_support()
    from device.daemon import Options, serve  # after skip_tls_support: it imports http.server
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="edgecam %(levelname)s %(name)s: %(message)s")
    options = Options(
        bundle=args.bundle, model=args.model, source=args.source, loop=getattr(args, "loop", True),
        max_fps=args.max_fps, threads=args.threads, smoothing=args.smoothing, threshold=args.threshold,
        top_k=args.top_k, emit=args.emit, http=args.http,
        token=getattr(args, "token", None) or os.environ.get("EDGECAM_TOKEN") or None,
        log_file=getattr(args, "log_file", None), log_max_bytes=args.log_max_bytes,
        log_backups=args.log_backups, log_emit=args.log_emit,
    )
    return serve(options)
