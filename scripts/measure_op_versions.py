"""Measure the highest version of each TFLite builtin op that each supported runtime can load, for every op
the kit's models use; prints the table that device/opversions.py ships.

    .venv/bin/python scripts/measure_op_versions.py --architectures build/op-versions \
        --runtime-python .venv/bin/python --runtime-python .venv-tflite/bin/python      (make op-versions)
    .venv/bin/python scripts/measure_op_versions.py artifacts/rps/tflite/*.tflite --runtime-python ...

--architectures DIR first makes the models to measure: a tiny bundle of every architecture python -m train
offers (train/model.py's CNNs and train/backbones.py's backbones, at 48 px, random weights: --weights none,
one epoch on a generated data set; the ops do not depend on the weights, the size or the alpha), each
converted by python -m convert's own code to every format (int8 with int8 and uint8 I/O, and the dynamic model
for --target-runtime tflite-runtime-2.14 too).

How: for every op, copies of the smallest model that has it are written with that op's version set to
1..--max-version (the flatbuffer is rewritten with the schema ai-edge-litert ships); each runtime's Python
then builds an interpreter from every copy (`probe` below, stdlib + the runtime only, so it runs in the
tflite-runtime 2.14 + numpy<2 environment too). A runtime registers each op for one contiguous range of
versions, whatever the tensor types, so the largest version that loads is the runtime's maximum. `make compat`
builds .venv-tflite.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def probe(folder: Path) -> None:
    """In the runtime's own Python: print {runtime, version, loads: {file: true/false}} as JSON."""
    try:
        import ai_edge_litert as module
        from ai_edge_litert.interpreter import Interpreter
        name, package = "ai_edge_litert", "ai-edge-litert"
    except ImportError:
        import tflite_runtime as module
        from tflite_runtime.interpreter import Interpreter
        name, package = "tflite_runtime", "tflite-runtime"
    from importlib.metadata import version

    loads = {}
    for path in sorted(folder.glob("*.tflite")):
        try:
            Interpreter(model_content=path.read_bytes()).allocate_tensors()
            loads[path.name] = True
        except (RuntimeError, ValueError):
            loads[path.name] = False
    print(json.dumps({"runtime": name, "version": version(package), "loads": loads,
                      "module_version": getattr(module, "__version__", "")}))


def variants(models: list, folder: Path, max_version: int) -> dict:
    """Write one copy per (op, version) of the smallest model that has the op; -> {file name: (op, version)}."""
    import flatbuffers

    sys.path.insert(0, str(REPO))
    from convert.readiness import _names, _schema, load_model

    schema, written, measured = _schema(), {}, set()
    names = _names(schema.BuiltinOperator)
    for number, path in enumerate(sorted(models, key=lambda path: Path(path).stat().st_size)):
        for index, code in enumerate(load_model(path).operatorCodes):
            op = names[max(code.builtinCode, code.deprecatedBuiltinCode)]
            if op in measured:
                continue
            measured.add(op)
            for version in range(1, max_version + 1):
                model = load_model(path)
                model.operatorCodes[index].version = version
                builder = flatbuffers.Builder(1024)
                builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
                name = f"m{number}-{op}-v{version}.tflite"
                (folder / name).write_bytes(builder.Output())
                written[name] = (op, version)
    return written


def build_architectures(folder: Path, size: int = 48) -> list:
    """A tiny bundle of every offered architecture, converted to every format; -> the .tflite files."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(REPO))
    from convert.api import convert_bundle
    from device.layout import CONVERTED_FORMATS, model_path
    from train.api import train_bundle
    from train.backbones import TRANSFER_MODELS
    from train.datagen import generate_dataset
    from train.model import MODELS

    data = folder / "data"
    if not (data / "dataset.json").is_file():
        generate_dataset(data, train_per_class=12, test_per_class=4, size=size, seed=0, progress=False)
    models = []
    for architecture in MODELS + TRANSFER_MODELS:
        bundle = folder / architecture
        extra = dict(weights="none", head_epochs=1, fine_tune_epochs=0) if architecture in TRANSFER_MODELS else {}
        if not (bundle / "manifest.json").is_file():
            train_bundle(data, bundle, model=architecture, image_size=size, epochs=1, batch_size=16, seed=0,
                         verbose=0, **extra)
        for variant, formats, options in (("", CONVERTED_FORMATS, {}),
                                          ("uint8-io", ("int8",), {"io_type": "uint8"}),
                                          ("tflite-runtime-2.14", ("dynamic",),
                                           {"target_runtime": "tflite-runtime-2.14"})):
            convert_bundle(bundle, formats=",".join(formats), skip_parity=True, progress=False,
                           log=lambda line: None, **options)
            for path in (bundle / model_path(fmt) for fmt in formats):
                kept = folder / "models" / f"{architecture}-{path.stem}{'-' + variant if variant else ''}.tflite"
                kept.parent.mkdir(parents=True, exist_ok=True)
                kept.write_bytes(path.read_bytes())
                models.append(kept)
    return sorted(set(models))


def usage(models: list) -> dict:
    """{op: ["ARCHITECTURE-FORMAT vN", ...]}: which of the measured models use each op, at which version."""
    sys.path.insert(0, str(REPO))
    from convert.readiness import op_versions

    used = {}
    for path in models:
        for op, version in op_versions(path).items():
            used.setdefault(op, []).append(f"{Path(path).stem.replace('-model_', ' ')} v{version}")
    return dict(sorted(used.items()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("models", nargs="*", type=Path, help=".tflite files whose ops to measure")
    parser.add_argument("--runtime-python", action="append", default=[],
                        help="a Python with one TFLite runtime installed (repeat for each runtime)")
    parser.add_argument("--architectures", type=Path, default=None, metavar="DIR",
                        help="first build a tiny bundle of every offered architecture in DIR and measure their models")
    parser.add_argument("--max-version", type=int, default=16, help="highest op version to try")
    parser.add_argument("--probe", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        probe(args.probe)
        return 0
    if args.architectures:
        args.models = list(args.models) + build_architectures(args.architectures)
    if not args.models or not args.runtime_python:
        parser.error("give .tflite files (or --architectures DIR) and at least one --runtime-python")
    table = {}
    with tempfile.TemporaryDirectory() as temporary:
        written = variants(args.models, Path(temporary), args.max_version)
        for python in args.runtime_python:
            result = json.loads(subprocess.run([python, __file__, "--probe", temporary], check=True,
                                               capture_output=True, text=True).stdout.splitlines()[-1])
            best = {}
            for name, ok in result["loads"].items():
                op, version = written[name]
                if ok:
                    best[op] = max(best.get(op, 0), version)
            key = f"{result['runtime']} {'.'.join(result['version'].split('.')[:2])}"
            table[key] = dict(sorted(best.items()))
    print(json.dumps(table, indent=4))
    print(json.dumps({"used_by": usage(args.models)}, indent=4))
    return 0


if __name__ == "__main__":
    sys.exit(main())
