"""python -m train --data DIR --out artifacts/NAME: train a classifier and export a model bundle."""

from __future__ import annotations

import argparse
import logging
import sys

from device.layout import TRAINING_RUN, StageError, staging_path
from device.validators import non_negative_int, positive_float, positive_int
from train.api import STRATEGIES, BundleExistsError, TrainOptions
from train.backbones import ARCHITECTURES, TRANSFER_MODELS, WEIGHTS_CHOICES
from train.dataset import DataError
from train.model import MODELS

DEFAULTS = TrainOptions()


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each flag; the epilog's table kept as written."""

# Measured by make bench (python -m bench.cost) on the 2-core x86-64 build machine; see README "Transfer learning".
# int8 invoke there, 2 threads, quiet machine: reference 1.20 ms, v2 0.35 0.21 ms, v2 1.0@224 1.64 ms, v3 0.15 ms.
COST_EPILOG = """\
cost per frame, int8 (python -m bench.cost; accuracy depends on your data and weights):
  model                       multiply-adds  int8 file  Edge TPU   suits
  reference @150                  351 M      3.5 MB     all ops    Pi 4/5, Coral
  mobilenet_v2 alpha 0.35 @96      11 M      0.6 MB     all ops    Pi Zero 2, Pi 3
  mobilenet_v2 alpha 0.35 @128     19 M      0.6 MB     all ops    Pi Zero 2 .. Pi 5, Coral
  mobilenet_v2 alpha 1.0 @224     300 M      2.7 MB     all ops    Pi 5, Coral
  mobilenet_v3_small @128          17 M      0.6 MB     all ops    Pi Zero 2 .. Pi 5, Coral
"""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description="Train an image classifier on a folder with one sub-folder per class and export a model "
                    "bundle (SavedModel, Keras model, labels, manifest) for convert/ and device/.",
        formatter_class=HelpFormatter,
        epilog=COST_EPILOG,
    )
    parser.add_argument("--data", required=True, action="append",
                        help="image folder: DATA/train/<class>/ (+ DATA/test/<class>/) or DATA/<class>/; repeat it "
                             "for several folders (classes merged by name, each folder's held-out images kept and "
                             "reported on their own)%(default).0s")
    parser.add_argument("--data-weight", type=positive_float, action="append", default=None,
                        help="loss weight of each --data folder's images, in --data order (default 1 each), e.g. "
                             "3 for a small folder from your own camera%(default).0s")
    parser.add_argument("--out", required=True, help="bundle folder to write, e.g. artifacts/rps")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help=f"maximum epochs, for the CNNs (default: {DEFAULTS.epochs}); the backbones train "
                             "--head-epochs + --fine-tune-epochs%(default).0s")
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULTS.batch_size, help="global batch size")
    parser.add_argument("--image-size", type=positive_int, default=None,
                        help="model input height and width in pixels, for the CNNs (default: 150); "
                             + ", ".join(f"{a.default_size} for {a.name}" for a in ARCHITECTURES.values())
                             + " (96-224 with ImageNet weights); --init-from: the bundle's%(default).0s")
    parser.add_argument("--learning-rate", type=float, default=DEFAULTS.learning_rate,
                        help="peak Adam learning rate: one epoch of warm-up from a tenth of it, then cosine decay "
                             "(phase 1 for the backbones)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed for splits, shuffling, init")
    parser.add_argument("--model", choices=MODELS + TRANSFER_MODELS, default=None,
                        help="architecture (default: reference; with --init-from, the bundle's); cost per frame "
                             "below%(default).0s")
    transfer = parser.add_argument_group("transfer learning (pretrained backbones, --init-from)")
    transfer.add_argument("--alpha", type=positive_float, default=None,
                          help="MobileNet width multiplier (default: "
                               + ", ".join(f"{a.default_alpha:g} for {a.name}" for a in ARCHITECTURES.values())
                               + "); ImageNet weights exist for " + "; ".join(
                                   f"{a.name}: {', '.join(f'{x:g}' for x in a.alphas)}" for a in ARCHITECTURES.values())
                               + "%(default).0s")
    transfer.add_argument("--weights", default=None, metavar="imagenet|none|PATH",
                          help=f"backbone weights: {' or '.join(WEIGHTS_CHOICES)} or a weights file (make weights "
                               f"writes one on a machine with internet) (default: {DEFAULTS.weights})%(default).0s")
    transfer.add_argument("--head-epochs", type=positive_int, default=None,
                          help=f"phase 1: epochs of the new head on the frozen backbone "
                               f"(default {DEFAULTS.head_epochs})%(default).0s")
    transfer.add_argument("--fine-tune-epochs", type=non_negative_int, default=None,
                          help=f"phase 2: epochs of the top blocks with the head "
                               f"(default {DEFAULTS.fine_tune_epochs})%(default).0s")
    transfer.add_argument("--fine-tune-learning-rate", type=float, default=None,
                          help="phase 2's peak learning rate (default: a tenth of --learning-rate)%(default).0s")
    transfer.add_argument("--freeze", type=non_negative_int, default=None,
                          help="keep the first N blocks fixed while fine-tuning (default: " + ", ".join(
                              f"{a.default_freeze} of {a.blocks} for {a.name}" for a in ARCHITECTURES.values())
                               + ", 0 for the CNNs)%(default).0s")
    transfer.add_argument("--init-from", default=None, metavar="BUNDLE",
                          help="start from this bundle's model.keras (its architecture and input size); a new head "
                               "when the class list differs; with under 50 images in a class (and no --freeze): the "
                               "device's head fit first, convolutions frozen, a tenth of the learning rate"
                               "%(default).0s")
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
    parser.add_argument("--verbose", dest="tf_verbose", action="store_true",
                        help="also show TensorFlow's own log lines (hidden unless training fails)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("edgecam").setLevel(logging.INFO)
    from train import quiet

    quiet.before_tensorflow(args.tf_verbose)
    from train.api import train_bundle

    options = {k: v for k, v in vars(args).items() if k not in ("data", "out", "tf_verbose") and v is not None}
    try:
        with quiet.tensorflow_log(enabled=not args.tf_verbose):
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
              f"continue with: python -m train {' '.join(f'--data {d}' for d in args.data)} --out {args.out} --resume", file=sys.stderr)
        return 130
    return 0
