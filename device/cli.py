"""``python -m device``: the command line. Spelled-out, typed flags with their defaults in --help.

``python -m device doctor ...`` hands over to device/doctor.py (imported only then).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from device.outputs import EMIT_MODES
from device.outputs import settings as output_settings
from device.regions import region_flag
from device.validators import non_negative_float, non_negative_int, positive_float, positive_int, probability

SUBCOMMANDS = {"doctor": "device.doctor", "capture": "device.teach.cli:capture", "teach": "device.teach.cli:teach",
               "undo": "device.teach.cli:undo", "status": "device.teach.cli:status",
               "evaluate": "device.teach.cli:evaluate", "dataset": "device.teach.dataset_cli",
               "tune": "device.tune", "token": "device.lan", "regions": "device.regions.cli"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m device",
        description="Classify camera frames with an edgecam bundle, offline. Results go to stdout as JSON "
                    "lines and to a local HTTP API. Subcommands: doctor (check this device), capture "
                    "(record labelled frames), teach (fit a new head on them), undo (go back one head), status (which "
                    "head serves), evaluate (score on a folder), tune (measure which model format and thread count is "
                    "fastest here).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--bundle", required=True, default=argparse.SUPPRESS,
        help="bundle folder written by train/ and convert/ (holds manifest.json)")
    add("--model", default=argparse.SUPPRESS,
        help="int8, float32, float16, dynamic, edgetpu, or a .tflite path; Edge TPU models take a device "
             "suffix such as edgetpu@usb:0 or model_int8_edgetpu.tflite@pci:0 (default: the fastest that "
             "passed parity, as python -m device tune measured it on this device; int8 when nothing is tuned)")
    add("--source", default="picamera2", help="picamera2[:N] | opencv:INDEX|PATH|URL | images:DIR")
    replay = parser.add_mutually_exclusive_group()
    replay.add_argument("--loop", dest="loop", action="store_true", default=argparse.SUPPRESS,
                        help="replay image folders and video files forever (the default)")
    replay.add_argument("--once", dest="loop", action="store_false", default=argparse.SUPPRESS,
                        help="replay image folders and video files once, then exit 0")
    add("--max-fps", type=non_negative_float, default=30.0, help="frame rate cap (0: as fast as possible)")
    add("--threads", type=positive_int, default=argparse.SUPPRESS,
        help="interpreter threads (default: the tuned choice; all cores when nothing is tuned)")
    add("--tune-seconds", type=non_negative_float, default=3.0,
        help="with a state folder and no tuning for this bundle and device, measure for about this long "
             "before serving (python -m device tune; 0: never at start)")
    add("--smoothing", type=positive_int, default=5, help="average probabilities over this many frames (1: off)")
    add("--threshold", type=probability, default=0.5, help="below this confidence the label is 'unknown'")
    add("--top-k", type=positive_int, default=3, help="classes listed in each result's top_k")
    add("--emit", choices=EMIT_MODES, default="every",
        help="stdout JSON lines: every frame, only when the label changes, or off")
    add("--http", default=os.environ.get("EDGECAM_HTTP") or "127.0.0.1:8080",
        help="HOST:PORT of the HTTP API (/healthz /status /metrics /events), or 'off'; an address other "
             "than loopback needs --token; $EDGECAM_HTTP sets it from the service's settings "
             "(default: 127.0.0.1:8080)")
    add("--token", default=argparse.SUPPRESS,
        help="bearer token the HTTP API requires, at least 16 characters (default: $EDGECAM_TOKEN if set, "
             "else none)")
    add("--log-file", default=argparse.SUPPRESS,
        help="also write results and events to this rotating log file (default: none)")
    add("--log-max-bytes", type=positive_int, default=10_000_000, help="rotate the log file at this size")
    add("--log-backups", type=positive_int, default=3, help="rotated log files kept")
    add("--log-emit", choices=EMIT_MODES, default="change",
        help="results in the log file: every frame, label changes (spares a Pi's SD card), or off")
    output_settings.add_arguments(parser, positive_int, non_negative_float)
    add("--log-level", choices=("debug", "info", "warning", "error"), default="info", help="stderr verbosity")
    add("--state-dir", default=argparse.SUPPRESS,
        help="folder for what this device learns (taught heads, the data set, tuning; device/state.py); default: "
             "$EDGECAM_STATE_DIR, else systemd's $STATE_DIRECTORY, else /var/lib/edgecam when this user may "
             "write it, else none (taught heads stay in BUNDLE/heads)")
    add_limits(parser)
    add_region_arguments(parser)
    teach = parser.add_argument_group("teaching (the Teach view, /api/*)")
    teach.add_argument("--dataset", default=argparse.SUPPRESS,
                       help="folder for captured frames (default: /var/lib/edgecam/dataset if it exists and is "
                            "writable, else ./data/NAME-own)")
    teach.add_argument("--keep-uncertain", type=non_negative_int, default=0,
                       help="keep the last N frames whose confidence fell under --threshold, to label later (0: off)")
    teach.add_argument("--uncertain-mb", type=non_negative_float, default=50.0,
                       help="the uncertain frames' ring never exceeds this many megabytes")
    teach.add_argument("--capture-fps", type=non_negative_float, default=5.0,
                       help="most frames a second the Teach view may record (0: no limit)")
    teach.add_argument("--dataset-limit-mb", type=non_negative_float, default=2000.0,
                       help="recording stops when the data set's images reach this size")
    teach.add_argument("--min-free-mb", type=non_negative_float, default=500.0,
                       help="recording stops when the disk would have less free space than this")
    add_drift(parser)
    return parser


def add_drift(parser: argparse.ArgumentParser) -> None:
    """The window drift is judged over (device/drift.py, docs/drift.md)."""
    from device import drift

    group = parser.add_argument_group("drift (is the scene still what the head was taught?)")
    group.add_argument("--drift-window-frames", type=positive_int, default=drift.DEFAULT_WINDOW_FRAMES,
                       help="frames in the window the drift state is judged over (ok / watch / drifted)")
    group.add_argument("--drift-window-seconds", type=non_negative_float, default=drift.DEFAULT_WINDOW_SECONDS,
                       help="the window's frames are spread over this many seconds (a frame joins it at most every "
                            "SECONDS/FRAMES seconds); 0: every frame, the window is the last FRAMES frames")


def add_region_arguments(parser: argparse.ArgumentParser) -> None:
    """Regions: several boxes of the view, each read on its own (docs/regions.md, device/regions/__init__.py)."""
    group = parser.add_argument_group("regions (docs/regions.md)")
    group.add_argument("--region", action="append", type=region_flag, default=argparse.SUPPRESS, metavar="NAME=X,Y,W,H",
                       help="read this box of the frame on its own (fractions of the frame: left, top, width, "
                            "height), with its own taught head, one result line per region; repeatable "
                            "(default: none, the whole frame)")
    group.add_argument("--regions-file", default=argparse.SUPPRESS, metavar="TOML",
                       help="regions settings file ([regions.NAME] box = [X, Y, W, H], smoothing, threshold, "
                            "repeat); STATE/regions.json (the Teach view) wins over it (default: none)")


def add_limits(parser: argparse.ArgumentParser) -> None:
    """What hostile frames and clients may take of the device (docs/limits.md)."""
    from device.http.server import Limits
    from device.sources import MAX_IMAGE_PIXELS

    limits = parser.add_argument_group("limits")
    add = limits.add_argument
    add("--max-image-pixels", type=positive_int, default=MAX_IMAGE_PIXELS,
        help="images:DIR files with more pixels (read from the header, before decoding) are skipped and counted")
    add("--max-connections", type=positive_int, default=Limits.max_connections,
        help="open HTTP connections; more get 503")
    add("--max-sse-clients", type=positive_int, default=Limits.max_sse_clients,
        help="/events streams at once; more get 503")
    add("--request-timeout", type=positive_float, default=Limits.request_timeout,
        help="seconds for a request's line and headers to arrive (and for each socket read or write)")
    add("--allow-host", action="append", default=[], metavar="NAME",
        help="also accept this name in the Host header (repeatable; IP addresses, localhost, this machine's "
             "name and NAME.local are always accepted)")


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


def skip_openssl_hashes() -> None:
    """hashlib and hmac use OpenSSL's libcrypto when they can (about 3.3 MB of resident pages mapped for one
    sha256 of the model file); their built-in sha256 gives the same digests (about 3x slower: 0.14 s for a
    14 MB model on the build machine). Hide _hashlib from the daemon process, in its entry point only, when
    nothing has loaded it yet; TLS (an https webhook, an mqtts broker) still works: ssl never needs it."""
    if "_hashlib" not in sys.modules and "hashlib" not in sys.modules and "hmac" not in sys.modules:
        sys.modules["_hashlib"] = None  # import _hashlib now raises ImportError: hashlib and hmac fall back


def single_blas_thread() -> None:
    """numpy's OpenBLAS starts a thread and a buffer per core at import; the daemon's numpy work (resize,
    quantize, top-k) never calls BLAS, and the interpreter has its own threads (--threads)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def webhook_wants_tls(argv: list) -> bool:
    """An https:// webhook (flag or $EDGECAM_WEBHOOK) needs http.client with TLS; read before parsing, because
    building the parser imports http.server (the limits' defaults)."""
    values = [os.environ.get("EDGECAM_WEBHOOK", "")]
    for index, argument in enumerate(argv):
        if argument == "--webhook" and index + 1 < len(argv):
            values.append(argv[index + 1])
        elif argument.startswith("--webhook="):
            values.append(argument.split("=", 1)[1])
    return any(value.lower().startswith("https:") for value in values)


def main(argv: list | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        import importlib
        import importlib.util

        module, _, function = SUBCOMMANDS[argv[0]].partition(":")
        if importlib.util.find_spec(module) is None:
            print(f"edgecam: '{argv[0]}' is not part of this copy of device/ ({module} is missing).",
                  file=sys.stderr)
            return 2
        from device.exitcodes import run

        return run(getattr(importlib.import_module(module), function or "main"), argv[1:], f"edgecam {argv[0]}")
    if not webhook_wants_tls(argv):  # before build_parser: its limits' defaults import http.server
        skip_tls_support()
    skip_openssl_hashes()
    single_blas_thread()
    args = build_parser().parse_args(argv)
    outputs = output_settings.from_arguments(args)
    from device.daemon import Options, serve  # after skip_tls_support: it imports http.server
    from device.teach.service import TeachOptions
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="edgecam %(levelname)s %(name)s: %(message)s")
    options = Options(
        bundle=args.bundle, model=getattr(args, "model", None), source=args.source,
        loop=getattr(args, "loop", True), max_fps=args.max_fps, threads=getattr(args, "threads", None),
        tune_seconds=args.tune_seconds, smoothing=args.smoothing, threshold=args.threshold,
        top_k=args.top_k, emit=args.emit, http=args.http,
        token=getattr(args, "token", None) or os.environ.get("EDGECAM_TOKEN") or None,
        log_file=getattr(args, "log_file", None), log_max_bytes=args.log_max_bytes,
        log_backups=args.log_backups, log_emit=args.log_emit, outputs=outputs,
        max_image_pixels=args.max_image_pixels, max_connections=args.max_connections,
        max_sse_clients=args.max_sse_clients, request_timeout=args.request_timeout,
        allow_hosts=tuple(args.allow_host), state_dir=getattr(args, "state_dir", None),
        teach=TeachOptions(dataset=getattr(args, "dataset", None), keep_uncertain=args.keep_uncertain,
                           uncertain_mb=args.uncertain_mb, capture_fps=args.capture_fps,
                           dataset_limit_mb=args.dataset_limit_mb, min_free_mb=args.min_free_mb),
        drift_window_frames=args.drift_window_frames, drift_window_seconds=args.drift_window_seconds,
        regions=tuple(getattr(args, "region", ())), regions_file=getattr(args, "regions_file", None),
    )
    if outputs.ha_remove:
        return remove_home_assistant(options)
    return serve(options)


def remove_home_assistant(options) -> int:
    """--ha-remove: take this camera's entities out of Home Assistant, then exit (no inference)."""
    from device.manifest import ManifestError, load_manifest

    if not options.outputs.mqtt:
        print("edgecam: --ha-remove needs --mqtt URL (the broker Home Assistant uses).", file=sys.stderr)
        return 2
    try:
        manifest = load_manifest(options.bundle)
        from device.outputs.mqtt import remove_home_assistant as remove
        return remove(options.outputs, manifest.name, list(manifest.labels))
    except (ManifestError, ValueError) as error:
        print(f"edgecam: {error}", file=sys.stderr)
        return 2
