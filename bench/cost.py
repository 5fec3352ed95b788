"""What each architecture costs per frame, counted from its int8 TFLite graph (``make bench``).

    python -m bench.cost --bundle artifacts/rps          # the bundle's own model + every architecture

One row per model: multiply-adds per frame (counted from the graph: CONV_2D, DEPTHWISE_CONV_2D,
FULLY_CONNECTED, TRANSPOSE_CONV), parameters (constant weights and biases of those ops, as the int8 graph holds
them: BatchNorm is folded in), int8 file size, int8 invoke latency on this machine (median), Edge TPU
readiness (convert/readiness.py), and accuracy on the held-out images where the model was trained (the
bundle's own row; the candidate architectures are built untrained, so their accuracy depends on your data).

Candidates are written ``ARCH[:ALPHA]@SIZE`` (e.g. ``mobilenet_v2:0.35@128``); each is built with random
weights, exported and converted to int8 with the same converter as ``python -m convert`` (calibrated on
random images: the cost does not depend on the weights).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_CANDIDATES = ("reference@150", "mobilenet_v2:0.35@96", "mobilenet_v2:0.35@128", "mobilenet_v2:1.0@224",
                      "mobilenet_v3_small:1.0@128")
MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


@dataclass
class Cost:
    model: str
    macs: int
    parameters: int
    size_bytes: int
    latency_ms: float
    edgetpu: str
    accuracy: str


def count_graph(path) -> tuple:
    """(multiply-adds per invoke, parameters, {op: count}) of a .tflite file, from its flatbuffer."""
    from convert.readiness import _names, _schema, load_model

    model = load_model(path)
    op_names = _names(_schema().BuiltinOperator)
    graph = model.subgraphs[0]
    tensors = graph.tensors

    def shape(index):
        return [int(d) for d in tensors[index].shape] if tensors[index].shape is not None else []

    macs, parameter_tensors, ops = 0, set(), {}
    for op in graph.operators or []:
        code = model.operatorCodes[op.opcodeIndex]
        name = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
        ops[name] = ops.get(name, 0) + 1
        if name not in MAC_OPS:
            continue
        inputs = [i for i in op.inputs if i >= 0]
        output = int(np.prod(shape(op.outputs[0])))
        weights = shape(inputs[1] if name != "TRANSPOSE_CONV" else inputs[1])
        if name == "CONV_2D":  # weights [out, kh, kw, in]
            macs += output * weights[1] * weights[2] * weights[3]
        elif name == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, channels]: one kh*kw product per output
            macs += output * weights[1] * weights[2]
        elif name == "FULLY_CONNECTED":  # weights [units, in]
            macs += output * weights[1]
        else:  # TRANSPOSE_CONV: weights [out, kh, kw, in]; each input pixel feeds kh*kw*out outputs
            macs += int(np.prod(shape(inputs[2]))) * weights[0] * weights[1] * weights[2]
        parameter_tensors.update(i for i in inputs[1:] if tensors[i].buffer and model.buffers[tensors[i].buffer].data
                                 is not None)
    parameters = sum(int(np.prod(shape(i))) for i in parameter_tensors)
    return macs, parameters, ops


def invoke_latency(path, threads: int, runs: int = 200) -> float:
    """Median milliseconds of set_tensor + invoke + get_tensor on zeros, after a warm-up."""
    from device.runtime import import_runtime

    _, interpreter_class, _ = import_runtime()
    interpreter = interpreter_class(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    batch = np.zeros(source["shape"], dtype=source["dtype"])
    times = []
    for index in range(runs + 20):
        start = time.perf_counter()
        interpreter.set_tensor(source["index"], batch)
        interpreter.invoke()
        interpreter.get_tensor(target["index"])
        if index >= 20:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def measure(name: str, path, threads: int, accuracy: str) -> Cost:
    from convert.readiness import check_model

    macs, parameters, _ = count_graph(path)
    readiness = check_model(path)
    edgetpu = (f"all {readiness.operations} ops" if readiness.ready
               else f"{readiness.edgetpu_ops} of {readiness.operations} ops")
    return Cost(name, macs, parameters, Path(path).stat().st_size, invoke_latency(path, threads), edgetpu, accuracy)


def parse_candidate(text: str) -> tuple:
    """'mobilenet_v2:0.35@128' -> ('mobilenet_v2', 0.35, 128); 'reference@150' -> ('reference', None, 150)."""
    from train.backbones import ARCHITECTURES
    from train.model import MODELS

    try:
        head, size = text.split("@")
        name, _, alpha = head.partition(":")
        size, alpha = int(size), (float(alpha) if alpha else None)
    except ValueError:
        raise ValueError(f"--candidate {text!r}: write ARCH[:ALPHA]@SIZE, e.g. mobilenet_v2:0.35@128") from None
    if name not in MODELS + tuple(ARCHITECTURES):
        raise ValueError(f"--candidate {text!r}: unknown architecture {name!r}; "
                         f"choose from {', '.join(MODELS + tuple(ARCHITECTURES))}.")
    if name in ARCHITECTURES and alpha is None:
        alpha = ARCHITECTURES[name].default_alpha
    return name, alpha, size


def candidate_int8(name: str, alpha, size: int, folder: Path) -> Path:
    """Build NAME untrained, export its SavedModel, convert to int8 as python -m convert does; the .tflite path."""
    import keras

    from convert import tflite
    from convert.calibration import representative_dataset
    from train.backbones import ARCHITECTURES, WeightsSource, build_transfer_model
    from train.model import build_model

    keras.utils.set_random_seed(0)
    if name in ARCHITECTURES:
        model = build_transfer_model(name, size, 3, alpha, WeightsSource("untrained"))
    else:
        model = build_model(name, (size, size), 3)
    saved = folder / "saved_model"
    model.export(str(saved), format="tf_saved_model", verbose=False)
    images = np.random.default_rng(0).uniform(0, 255, size=(16, size, size, 3)).astype(np.float32)
    serving = tflite.ServingFunction(saved, size, size)
    content = tflite.convert(serving, "int8", representative_dataset(images, progress=False))
    path = folder / "model_int8.tflite"
    path.write_bytes(content)
    return path


def cost_table(bundle, candidates=DEFAULT_CANDIDATES, threads: int = 0, log=print) -> list:
    from device.manifest import load_manifest

    threads = threads or os.cpu_count() or 1
    rows = []
    if bundle is not None:
        manifest = load_manifest(bundle)
        entry = manifest.models.get("int8")
        if entry is None:
            raise ValueError(f"{bundle} has no int8 model: run python -m convert {bundle} first.")
        arch = manifest.architecture
        label = (f"{arch.name or manifest.training.get('model') or manifest.name}"
                 + (f":{arch.alpha:g}" if arch.alpha else "") + f"@{manifest.input.height} (this bundle)")
        accuracy = f"{entry.accuracy:.2%} int8" if entry.accuracy is not None else "-"
        rows.append(measure(label, Path(bundle) / entry.file, threads, accuracy))
    for text in candidates:
        name, alpha, size = parse_candidate(text)
        log(f"bench.cost: building and converting {text} (untrained) ...")
        with tempfile.TemporaryDirectory(prefix="edgecam-cost-") as folder:
            path = candidate_int8(name, alpha, size, Path(folder))
            rows.append(measure(text, path, threads, "untrained"))
    return rows


HEADER = ("model", "multiply-adds / frame", "parameters", "int8 file", "int8 invoke here", "Edge TPU (static)",
          "held-out accuracy")


def cells(cost: Cost) -> tuple:
    return (cost.model, f"{cost.macs / 1e6:.1f} M", f"{cost.parameters / 1e6:.2f} M", f"{cost.size_bytes / 1e6:.2f} MB",
            f"{cost.latency_ms:.2f} ms", cost.edgetpu, cost.accuracy)


def markdown(rows) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cost", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bundle", default=None, help="converted bundle whose int8 model is the first row")
    parser.add_argument("--candidate", action="append", default=None,
                        help=f"ARCH[:ALPHA]@SIZE to build untrained and measure; repeatable (default: "
                             f"{' '.join(DEFAULT_CANDIDATES)})")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="interpreter threads")
    parser.add_argument("--out", default=None, help="markdown file (default: BUNDLE/bench.md's cost section is "
                                                    "written by python -m bench; here: print only)")
    args = parser.parse_args(argv)
    from train import quiet

    quiet.before_tensorflow(verbose=False)
    try:
        with quiet.tensorflow_log():
            rows = cost_table(args.bundle, args.candidate or DEFAULT_CANDIDATES, args.threads,
                              log=lambda text: print(text, file=sys.stderr))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    table = markdown(rows)
    print(table, end="")
    if args.out:
        Path(args.out).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
