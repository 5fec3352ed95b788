"""python -m train --data DIR --out artifacts/NAME: train a classifier and export a model bundle."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from device.cli import positive_int
from device.layout import TRAINING_RUN, StageError, staging_path
from train.api import STRATEGIES, BundleExistsError, TrainOptions
from train.dataset import DataError
from train.model import MODELS

DEFAULTS = TrainOptions()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description="Train an image classifier on a folder with one sub-folder per class and export a model "
                    "bundle (SavedModel, Keras model, labels, manifest) for convert/ and device/.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", required=True, help="image folder: DATA/train/<class>/ (+ DATA/test/<class>/) "
                                                      "or DATA/<class>/")
    parser.add_argument("--out", required=True, help="bundle folder to write, e.g. artifacts/rps")
    parser.add_argument("--epochs", type=positive_int, default=DEFAULTS.epochs, help="maximum epochs")
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULTS.batch_size, help="global batch size")
    parser.add_argument("--image-size", type=positive_int, default=DEFAULTS.image_size,
                        help="model input height and width in pixels")
    parser.add_argument("--learning-rate", type=float, default=DEFAULTS.learning_rate, help="peak Adam learning rate: one epoch of warm-up from a tenth of it, then cosine decay")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed for splits, shuffling, init")
    parser.add_argument("--model", choices=MODELS, default=DEFAULTS.model, help="architecture")
    parser.add_argument("--validation-split", type=float, default=DEFAULTS.validation_split,
                        help="fraction of training images held out for validation (and as the test set when "
                             "DATA has no test/ folder)")
    parser.add_argument("--patience", type=positive_int, default=DEFAULTS.patience,
                        help="early stopping: epochs without validation accuracy gain")
    parser.add_argument("--strategy", choices=STRATEGIES, default=DEFAULTS.strategy,
                        help="tf.distribute: one device, all local GPUs (or --cpu-devices logical CPUs), "
                             "or several machines (TF_CONFIG)")
    parser.add_argument("--cpu-devices", type=positive_int, default=DEFAULTS.cpu_devices,
                        help="logical CPU devices for --strategy mirrored when there is no GPU")
    parser.add_argument("--no-augment", dest="augment", action="store_false",
                        help="turn off flip/rotation/zoom augmentation (applied in tf.data, training only; "
                             "on unless this flag is given)%(default).0s")  # .0s: no '(default: True)'
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run for --out (kept in the hidden .NAME.training folder "
                             "beside it)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the bundle already in --out (only once the new one is exported; a failed "
                             "run leaves it untouched) or start an interrupted run over")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("edgecam").setLevel(logging.INFO)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from train.api import train_bundle

    options = {k: v for k, v in vars(args).items() if k not in ("data", "out")}
    try:
        train_bundle(args.data, args.out, **options)
    except StageError as error:  # another command is writing the bundle: worth a retry
        print(f"error: {error}", file=sys.stderr)
        return 3
    except (DataError, BundleExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a full disk, a folder made read-only meanwhile ...
        print(f"error: {error}. {args.out} is unchanged; the run is kept in {staging_path(args.out, TRAINING_RUN)}: free "
              f"space or fix permissions, then continue with --resume.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: {args.out} is unchanged; finished epochs are saved in {staging_path(args.out, TRAINING_RUN)}; "
              f"continue with: python -m train --data {args.data} --out {args.out} --resume", file=sys.stderr)
        return 130
    return 0
