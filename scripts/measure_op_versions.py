"""Measure the highest version of each TFLite builtin op that each supported runtime can load, for the ops
the kit's models use; prints the table that device/opversions.py ships.

    .venv/bin/python scripts/measure_op_versions.py artifacts/rps/tflite/*.tflite \
        --runtime-python .venv/bin/python --runtime-python .venv-tflite/bin/python

How: for every op in the given models, copies of the model are written with that op's version set to
1..--max-version (the flatbuffer is rewritten with the schema ai-edge-litert ships); each runtime's Python
then builds an interpreter from every copy (`probe` below, stdlib + the runtime only, so it runs in the
tflite-runtime 2.14 + numpy<2 environment too). A runtime registers each op for one contiguous range of
versions, so the largest version that loads is the runtime's maximum. `make compat` builds .venv-tflite.
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
    """Write one copy per (model, op, version); -> {file name: (op, version)}."""
    import flatbuffers

    sys.path.insert(0, str(REPO))
    from convert.readiness import _names, _schema, load_model

    schema, written = _schema(), {}
    names = _names(schema.BuiltinOperator)
    for number, path in enumerate(models):
        for index, code in enumerate(load_model(path).operatorCodes):
            op = names[max(code.builtinCode, code.deprecatedBuiltinCode)]
            for version in range(1, max_version + 1):
                model = load_model(path)
                model.operatorCodes[index].version = version
                builder = flatbuffers.Builder(1024)
                builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
                name = f"m{number}-{op}-v{version}.tflite"
                (folder / name).write_bytes(builder.Output())
                written[name] = (op, version)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("models", nargs="*", type=Path, help=".tflite files whose ops to measure")
    parser.add_argument("--runtime-python", action="append", default=[],
                        help="a Python with one TFLite runtime installed (repeat for each runtime)")
    parser.add_argument("--max-version", type=int, default=16, help="highest op version to try")
    parser.add_argument("--probe", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        probe(args.probe)
        return 0
    if not args.models or not args.runtime_python:
        parser.error("give .tflite files and at least one --runtime-python")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
