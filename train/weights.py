"""``make weights``: fetch keras.applications' ImageNet weights on a machine with internet, for an offline one.

    python -m train.weights --model mobilenet_v2 --alpha 0.35 --image-size 128 --out weights/
    # copy weights/<file>.h5 to the offline machine, then:
    python -m train --model mobilenet_v2 --alpha 0.35 --image-size 128 --weights weights/<file>.h5 ...
"""

from __future__ import annotations

import argparse
import os
import sys

from device.validators import positive_float, positive_int
from train.backbones import ARCHITECTURES, TRANSFER_MODELS, WeightsError, resolve_weights, sha256_of


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.weights", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", choices=TRANSFER_MODELS, default="mobilenet_v2", help="backbone")
    parser.add_argument("--alpha", type=positive_float, default=None, help="width multiplier (default: the model's)")
    parser.add_argument("--image-size", type=positive_int, default=128, help="input size (96, 128, 160, 192, 224)")
    parser.add_argument("--out", default="weights", help="folder to copy the weights file into")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    alpha = ARCHITECTURES[args.model].default_alpha if args.alpha is None else args.alpha
    try:
        resolve_weights("imagenet", args.model, alpha, args.image_size)  # cached, or reachable: else the fix
        from train.backbones import fetch_imagenet

        path = fetch_imagenet(args.model, alpha, args.image_size, args.out)
    except (WeightsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"weights: {path} (sha256 {sha256_of(path)})")
    print(f"use:     python -m train --model {args.model} --alpha {alpha:g} --image-size {args.image_size} "
          f"--weights {path} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
