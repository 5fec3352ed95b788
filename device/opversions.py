"""Which TFLite builtin op versions each runtime the kit supports can run: the runtime version guard.

A model converted by a newer TensorFlow may use op versions an older runtime lacks; the interpreter then
fails with "Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'". convert/ records each model's
ops and versions in the manifest (ModelFile.ops); the loader compares them with the table below for the
runtime it loads and refuses with the op, the versions and the fix before the interpreter is built.

MAX_OP_VERSIONS is measured, not copied from release notes: `make op-versions` (scripts/measure_op_versions.py)
builds a tiny model of every architecture python -m train offers, converts each to every format (float32,
float16, dynamic, int8 with int8 and uint8 I/O, dynamic for tflite-runtime 2.14), rewrites the op versions and
asks each runtime which ones it loads. An op missing here is UNKNOWN, never taken as fine: lowest_runtimes
says "unknown" for that runtime, --target-runtime refuses the model, and the loader leaves the verdict to the
interpreter (whose opcode error explain_opcode_error turns into the same message).
Standard library only (device/ stays lean).
"""

from __future__ import annotations

import re
from importlib import metadata

# runtime module -> runtime version (major.minor) -> op -> highest version it loads.
MAX_OP_VERSIONS = {
    "ai_edge_litert": {
        "2.3": {"ADD": 6, "CONV_2D": 8, "DEPTHWISE_CONV_2D": 7, "DEQUANTIZE": 9, "FULLY_CONNECTED": 14,
                "MAX_POOL_2D": 3, "MEAN": 3, "MUL": 8, "QUANTIZE": 6, "RESHAPE": 1, "SOFTMAX": 4},
    },
    "tflite_runtime": {
        "2.14": {"ADD": 5, "CONV_2D": 7, "DEPTHWISE_CONV_2D": 7, "DEQUANTIZE": 5, "FULLY_CONNECTED": 10,
                 "MAX_POOL_2D": 3, "MEAN": 3, "MUL": 7, "QUANTIZE": 3, "RESHAPE": 1, "SOFTMAX": 3},
    },
}
# python -m convert --target-runtime NAME: the runtime a model must run on.
TARGET_RUNTIMES = {"ai-edge-litert-2.3": ("ai_edge_litert", "2.3"), "tflite-runtime-2.14": ("tflite_runtime", "2.14")}
DISTRIBUTIONS = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}
UNKNOWN = "unknown"  # lowest_runtimes: an op the table has not measured
OPCODE_ERROR = re.compile(r"builtin opcode '(?P<op>\w+)' version '(?P<version>\d+)'")


def _key(version: str) -> tuple:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def runtime_version(runtime: str) -> str | None:
    """The installed version of a runtime module (ai_edge_litert, tflite_runtime), or None."""
    try:
        return metadata.version(DISTRIBUTIONS[runtime])
    except (KeyError, metadata.PackageNotFoundError):
        return None


def limits_for(runtime: str, version: str | None) -> dict | None:
    """The table to judge VERSION of RUNTIME by: the smallest measured version at or above it (a runtime runs no
    op version its successors lack). None when nothing is known that bounds it (a newer runtime, tensorflow)."""
    known = MAX_OP_VERSIONS.get(runtime, {})
    if version is None:
        return None
    candidates = [v for v in known if _key(v) >= _key(version)]
    return known[min(candidates, key=_key)] if candidates else None


def unsupported(ops: dict, runtime: str, version: str | None) -> list:
    """-> [(op, version needed, highest version the runtime has)] for the ops RUNTIME VERSION cannot run."""
    limits = limits_for(runtime, version)
    if not limits:
        return []
    return [(op, needed, limits[op]) for op, needed in sorted(ops.items()) if op in limits and needed > limits[op]]


def unknown_ops(ops: dict, runtime: str, version: str | None) -> list:
    """The ops in OPS that the table for RUNTIME VERSION has not measured (empty when no table bounds it)."""
    limits = limits_for(runtime, version)
    if not limits:
        return []
    return sorted(op for op in ops if op not in limits)


def lowest_runtimes(ops: dict) -> dict:
    """-> {runtime module: lowest measured version that runs every op in OPS; None when none does; UNKNOWN when
    an op is not in the runtime's table, so nothing vouches for it}."""
    result = {}
    for runtime, versions in MAX_OP_VERSIONS.items():
        measured = [v for v, limits in versions.items() if all(op in limits for op in ops)]
        able = [v for v in measured if all(n <= versions[v][op] for op, n in ops.items())]
        too_new = any(op in limits and n > limits[op] for limits in versions.values() for op, n in ops.items())
        result[runtime] = min(able, key=_key) if able else None if too_new else UNKNOWN
    return result


def refusal(path, runtime: str, version: str | None, problems: list, bundle=None) -> str:
    """The message: which op, which versions, and the two fixes."""
    needs = "; ".join(f"{op} version {needed} (it runs up to version {highest})" for op, needed, highest in problems)
    target = next((name for name, (module, _) in TARGET_RUNTIMES.items() if module == runtime), None)
    reconvert = (f"re-convert for this runtime on the host: python -m convert {bundle or 'BUNDLE'} "
                 f"--target-runtime {target}, then copy the bundle again" if target else
                 "re-convert the model with the TensorFlow version that matches this runtime")
    return (f"{path} needs op versions that {DISTRIBUTIONS.get(runtime, runtime)} {version or '?'} does not have: "
            f"{needs}. The model was converted by a newer TensorFlow. Fix: {reconvert}; or upgrade the runtime "
            f"on the device (pip install --upgrade ai-edge-litert).")


def explain_opcode_error(error_text: str, path, runtime: str, version: str | None, bundle=None) -> str | None:
    """The interpreter's own "Didn't find op for builtin opcode" error, turned into the same message."""
    match = OPCODE_ERROR.search(error_text)
    if match is None:
        return None
    op, needed = match["op"], int(match["version"])
    highest = (limits_for(runtime, version) or {}).get(op)
    problem = (op, needed, highest if highest is not None else "a lower version")
    return refusal(path, runtime, version, [problem], bundle)
