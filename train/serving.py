"""Lay a bundle's SavedModel out for TensorFlow Serving: ``BASE/NAME/VERSION/`` (``make serving``).

    python -m train.serving artifacts/rps --base serving --name rps     # -> serving/rps/1/, then 2/, 3/ ...

TensorFlow Serving watches ``BASE/NAME/`` and serves the highest integer VERSION; earlier versions are kept
(it can roll back, and a client can ask for one by number). Each export gets the next free number. The copy
is written beside its final place and renamed into it, so a watching server never sees half a model. The
SavedModel already has the ``serving_default`` signature (float32 NHWC RGB 0..255 -> probabilities), which is
checked here before anything is written.

Serve it (tensorflow_model_server is not installable on this build machine: Google's apt repository or the
tensorflow/serving Docker image)::

    tensorflow_model_server --rest_api_port=8501 --model_name=rps --model_base_path=$PWD/serving/rps
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

SIGNATURE = "serving_default"


class ServingError(ValueError):
    """The bundle or the target cannot be used; the message names the fix."""


def versions(model_dir: Path) -> list:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def export_for_serving(bundle, base, name: str | None = None) -> Path:
    """Copy BUNDLE's SavedModel to BASE/NAME/<next version>/ and return that folder."""
    from device.manifest import ManifestError, load_manifest

    bundle = Path(bundle)
    try:
        manifest = load_manifest(bundle)
    except ManifestError as error:
        raise ServingError(str(error)) from None
    saved_model = bundle / manifest.saved_model
    if not (saved_model / "saved_model.pb").is_file():
        raise ServingError(f"{saved_model} holds no saved_model.pb: the bundle is incomplete. Re-export it with "
                           f"python -m train --out {bundle} --overwrite.")
    check_signature(saved_model)
    name = name or manifest.name
    if not name or "/" in name or name.startswith("."):
        raise ServingError(f"--name {name!r}: give a plain model name such as rps (it becomes the URL's "
                           "/v1/models/NAME).")
    model_dir = Path(base) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = (versions(model_dir) or [0])[-1] + 1
    staging = model_dir / f".{version}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(saved_model, staging)
    final = model_dir / str(version)
    os.replace(staging, final)
    return final


def check_signature(saved_model: Path) -> None:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model))
    if SIGNATURE not in loaded.signatures:
        raise ServingError(f"{saved_model} has no '{SIGNATURE}' signature (has {', '.join(loaded.signatures)}): "
                           "TensorFlow Serving would not find it. Re-export the bundle with python -m train.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.serving", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("bundle", help="bundle folder written by python -m train")
    parser.add_argument("--base", default="serving", help="model base folder (TensorFlow Serving's model_base_path "
                                                          "is BASE/NAME)")
    parser.add_argument("--name", default=None, help="model name in the URL (default: the bundle's name)")
    args = parser.parse_args(argv)
    from train import quiet

    quiet.before_tensorflow(verbose=False)
    try:
        with quiet.tensorflow_log():
            folder = export_for_serving(args.bundle, args.base, args.name)
    except ServingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model_dir = folder.parent.resolve()
    print(f"serving: {folder} (versions kept: {', '.join(map(str, versions(model_dir)))})")
    print(f"serve:   tensorflow_model_server --rest_api_port=8501 --model_name={model_dir.name} "
          f"--model_base_path={model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
