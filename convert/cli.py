"""python -m convert BUNDLE: the command line over convert.api.convert_bundle.

Exit status: 0 all parity thresholds hold (or --skip-parity); 1 a threshold is broken (the table marks the
row; a CI job fails; the bundle is unchanged and the failed try is kept beside it); 2 bad input (missing bundle
or SavedModel, unusable calibration folder, undecodable images, a read-only folder, bad flag value); 3 another
edgecam command is writing the bundle (try again when it is done).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from convert.calibration import DEFAULT_SAMPLES, MIN_SAMPLES
from convert.parity import (
    CONFIDENT_MARGIN,
    DEFAULT_MAX_ACCURACY_DROP,
    DEFAULT_MAX_DROP_BOUND,
    DEFAULT_MIN_AGREEMENT,
    Thresholds,
)
from convert.tflite import FORMATS, IO_TYPES, LATEST
from device.layout import PARITY_MD, StageError
from device.opversions import TARGET_RUNTIMES
from device.validators import non_negative_float, positive_int, probability


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m convert",
        description="Convert an edgecam bundle's SavedModel to TFLite (float32, float16, dynamic-range, int8), "
                    "measure accuracy parity through the device's own interpreter loader and preprocessing, "
                    "write parity.json/parity.md and record the models in the manifest. "
                    "Exit 1 when a parity threshold is broken, 2 for bad input.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("bundle", type=Path, help="bundle folder written by python -m train (e.g. artifacts/rps)")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help=f"comma-separated subset of {','.join(FORMATS)}")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="folder of representative images for int8 calibration (searched recursively); "
                             "default: a sample of the bundle's own training images (the manifest's dataset.root, "
                             "held-out images excluded): a bundle trained on your folder calibrates on it"
                             "%(default).0s")  # .0s: the default is described, not printed as 'None'
    parser.add_argument("--calibration-samples", type=positive_int, default=DEFAULT_SAMPLES,
                        help=f"calibration images to use, spread evenly over the folder (at least {MIN_SAMPLES})")
    parser.add_argument("--io-type", choices=IO_TYPES, default="int8",
                        help="int8 model input/output type (uint8 for older Edge TPU flows)")
    parser.add_argument("--test-data", type=Path, default=None,
                        help="held-out images in class folders (DIR/LABEL/*.png), instead of the bundle's "
                             "heldout.txt")
    parser.add_argument("--target-runtime", choices=(LATEST, *TARGET_RUNTIMES), default=LATEST,
                        help="the TFLite runtime the models must run on: latest takes TensorFlow's newest op "
                             "versions; tflite-runtime-2.14 (Raspberry Pi OS with numpy<2) gets op versions it "
                             "has (per-tensor dense weights in the dynamic model) or exit 2 naming the op")
    parser.add_argument("--imx500", action="store_true",
                        help="also convert for the Raspberry Pi AI Camera (imx500/packerOut.zip: MCT + imxconv-tf in "
                             "the toolchain venv that make imx500-toolchain builds) and measure its parity")
    parser.add_argument("--edgetpu", action="store_true",
                        help="also compile model_int8_edgetpu.tflite when edgetpu_compiler is on PATH")
    for fmt in DEFAULT_MIN_AGREEMENT:
        parser.add_argument(f"--min-agreement-{fmt}", type=probability, default=DEFAULT_MIN_AGREEMENT[fmt],
                            metavar="FRACTION",
                            help=f"least top-1 agreement of {fmt} with the SavedModel on confident images")
    for fmt in DEFAULT_MAX_ACCURACY_DROP:
        parser.add_argument(f"--max-accuracy-drop-{fmt}", type=non_negative_float, default=DEFAULT_MAX_ACCURACY_DROP[fmt],
                            metavar="POINTS",
                            help=f"most accuracy (percentage points) {fmt} may lose vs. the SavedModel")
    for fmt in DEFAULT_MAX_DROP_BOUND:
        parser.add_argument(f"--max-drop-bound-{fmt}", type=non_negative_float, default=DEFAULT_MAX_DROP_BOUND[fmt],
                            metavar="POINTS",
                            help=f"most accuracy {fmt} may plausibly lose: the upper end of the drop's 95%% interval")
    parser.add_argument("--confident-margin", type=probability, default=CONFIDENT_MARGIN, metavar="FRACTION",
                        help="an image counts for agreement when the SavedModel's top-1 probability leads the "
                             "runner-up by at least this; the rest are near ties, reported on their own")
    parser.add_argument("--skip-parity", action="store_true", help="convert only; measure nothing")
    parser.add_argument("--debug-quantization", action="store_true",
                        help="write the per-layer int8 error report even when int8 parity holds")
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1,
                        help="interpreter threads for parity and latency (the device daemon's default: all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    from convert.api import convert_bundle
    from convert.errors import ConvertError

    thresholds = Thresholds(
        min_agreement={fmt: getattr(args, f"min_agreement_{fmt}") for fmt in DEFAULT_MIN_AGREEMENT},
        max_accuracy_drop={fmt: getattr(args, f"max_accuracy_drop_{fmt}") for fmt in DEFAULT_MAX_ACCURACY_DROP},
        max_drop_bound={fmt: getattr(args, f"max_drop_bound_{fmt}") for fmt in DEFAULT_MAX_DROP_BOUND},
        confident_margin=args.confident_margin,
    )
    try:
        report = convert_bundle(
            args.bundle, formats=args.formats, calibration_dir=args.calibration,
            calibration_samples=args.calibration_samples, io_type=args.io_type, test_data=args.test_data,
            edgetpu=args.edgetpu, imx500=args.imx500, thresholds=thresholds, skip_parity=args.skip_parity,
            debug_quantization=args.debug_quantization, threads=args.threads, progress=not args.quiet,
            target_runtime=args.target_runtime,
        )
    except ConvertError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except StageError as error:  # another command is writing the bundle: worth a retry
        print(f"error: {error}", file=sys.stderr)
        return 3
    except OSError as error:  # a full disk, a folder made read-only meanwhile: the bundle is unchanged
        print(f"error: {error}. {args.bundle} is unchanged; fix the cause and run again.", file=sys.stderr)
        return 2
    print()
    print(report.to_markdown())
    if not report.passed:
        broken = ", ".join(row.format for row in report.models if not row.passed)
        kept = Path(report.failed_try) if report.failed_try else args.bundle
        print(f"PARITY FAILED for {broken}: {args.bundle} is unchanged (its previous models, manifest and parity "
              f"report stay); the failed try is kept in {kept}: see {kept / PARITY_MD}"
              + (f" and {kept / report.quantization_debug}" if report.quantization_debug else ""),
              file=sys.stderr)
        return 1
    return 0
