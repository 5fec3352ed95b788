"""Offline Edge TPU readiness check: read a .tflite flatbuffer and list everything the Edge TPU would not
run, without the compiler and without hardware.

    python -m convert.readiness artifacts/rps/tflite/model_int8.tflite   # exit 0 ready, 1 not ready

Rules from Coral's "TensorFlow models on the Edge TPU" (coral.ai/docs/edgetpu/models-intro, "Model
requirements" and "Supported operations", Edge TPU runtime 14+ / compiler 16):
  * every tensor the graph computes is 8-bit quantized (int8 or uint8); int32 only for constant biases
    and shape operands; model parameters (weights, biases) are constants;
  * tensor sizes are static (no -1 in a shape signature), batch size 1;
  * tensors are 1-, 2- or 3-D; with more dimensions only the 3 innermost may be larger than 1;
  * only the operations in SUPPORTED_OPS, within their listed limits; one subgraph (no control flow).
The compiler maps ops in graph order up to the first one it cannot map; that op and every op after it
run on the CPU (without -d/-n partitioning), which is how the estimate below counts them.
This is a static check: the compiler can still decline an op for reasons it only knows (e.g. a
resize it considers too lossy, on-chip memory); compile with --edgetpu to be sure.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# Coral's table of supported operations: TFLite builtin name -> known limitation (empty: none listed).
SUPPORTED_OPS = {
    "ADD": "", "AVERAGE_POOL_2D": "no fused activation function",
    "CONCATENATION": "no fused activation function; a constant input must be all zeros (2 inputs only)",
    "CONV_2D": "", "DEPTHWISE_CONV_2D": "same dilation in x and y", "EXPAND_DIMS": "",
    "FULLY_CONNECTED": "default weights format only; output tensor is one-dimensional",
    "L2_NORMALIZATION": "", "LOGISTIC": "", "LSTM": "unidirectional only",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "", "MAXIMUM": "", "MAX_POOL_2D": "no fused activation function",
    "MEAN": "no reduction in the batch dimension", "MINIMUM": "", "MUL": "",
    "PACK": "no packing in the batch dimension", "PAD": "no padding in the batch dimension", "PRELU": "",
    "QUANTIZE": "", "REDUCE_MAX": "not over the batch dimension", "REDUCE_MIN": "not over the batch dimension",
    "RELU": "", "RELU6": "", "RELU_N1_TO_1": "", "RESHAPE": "may not map for large tensors",
    "RESIZE_BILINEAR": "3-D input/output; may not map when precision would suffer",
    "RESIZE_NEAREST_NEIGHBOR": "3-D input/output", "RSQRT": "", "SLICE": "",
    "SOFTMAX": "1-D input of at most 16,000 elements", "SPACE_TO_DEPTH": "", "SPLIT": "not in the batch dimension",
    "SQUEEZE": "", "STRIDED_SLICE": "", "SUB": "", "SUM": "not over the batch dimension",
    "SQUARED_DIFFERENCE": "", "TANH": "", "TRANSPOSE": "", "TRANSPOSE_CONV": "",
}
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
NO_FUSED_ACTIVATION = ("AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION")
SOFTMAX_MAX_ELEMENTS = 16000
QUANTIZED = ("INT8", "UINT8")


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - tensorflow ships the same generated schema
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def _names(enum) -> dict:
    return {value: name for name, value in vars(enum).items() if not name.startswith("_")}


def load_model(path):
    schema = _schema()
    return schema.ModelT.InitFromPackedBuf(Path(path).read_bytes(), 0)


def io_quantization(path) -> dict:
    """Input/output dtype, scale and zero point of a .tflite file, read from the flatbuffer (works for
    Edge TPU models too, which no plain interpreter can load)."""
    model = load_model(path)
    types = _names(_schema().TensorType)
    graph = model.subgraphs[0]
    result = {}
    for side, index in (("input", graph.inputs[0]), ("output", graph.outputs[0])):
        tensor = graph.tensors[index]
        quant = tensor.quantization
        has = quant is not None and quant.scale is not None and len(quant.scale) > 0
        result[f"{side}_dtype"] = types[tensor.type].lower()
        result[f"{side}_scale"] = float(quant.scale[0]) if has else 0.0
        result[f"{side}_zero_point"] = int(quant.zeroPoint[0]) if has else 0
    return result


def op_versions(model) -> dict:
    """{builtin op name: version} of a .tflite file or its bytes (the highest when an op appears twice)."""
    schema = _schema()
    names = _names(schema.BuiltinOperator)
    parsed = schema.ModelT.InitFromPackedBuf(model, 0) if isinstance(model, bytes) else load_model(model)
    ops = {}
    for code in parsed.operatorCodes or []:
        name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), str(code.builtinCode))
        ops[name] = max(ops.get(name, 0), int(code.version))
    return dict(sorted(ops.items()))


@dataclass
class Finding:
    problem: str
    op_index: int = -1  # -1: about the whole model
    op: str = ""
    tensor: str = ""


@dataclass
class Readiness:
    model: str
    operations: int = 0
    findings: list[Finding] = field(default_factory=list)
    first_cpu_op: int = -1  # index of the first op the compiler could not map; -1 when all map
    op_counts: dict = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return not self.findings

    @property
    def edgetpu_ops(self) -> int:
        return self.operations if self.first_cpu_op < 0 else self.first_cpu_op

    def summary(self) -> str:
        if self.ready:
            return (f"{Path(self.model).name}: ready for the Edge TPU, all {self.operations} operations are "
                    "supported (static check; compile with --edgetpu to confirm)")
        model_level = [f for f in self.findings if f.op_index < 0]
        return (f"{Path(self.model).name}: NOT ready, {len(self.findings)} problem(s)"
                + (f" ({model_level[0].problem}{'; ...' if len(model_level) > 1 else ''})" if model_level else "")
                + f"; estimate: {self.edgetpu_ops} of {self.operations} operations on the Edge TPU, "
                f"{self.operations - self.edgetpu_ops} on the CPU")

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(ready=self.ready, edgetpu_ops=self.edgetpu_ops, cpu_ops=self.operations - self.edgetpu_ops)
        return data

    def to_markdown(self) -> str:
        lines = [f"# Edge TPU readiness: {Path(self.model).name}", "", self.summary() + ".", ""]
        if self.findings:
            lines += ["| op # | op | tensor | problem |", "|---:|---|---|---|"]
            for f in self.findings:
                lines.append(f"| {'-' if f.op_index < 0 else f.op_index} | {f.op or '-'} | {f.tensor or '-'} "
                             f"| {f.problem} |")
            lines.append("")
        lines += ["Operations: " + ", ".join(f"{name} x{count}" for name, count in self.op_counts.items()) + ".",
                  "", ("Rules: Coral's model requirements and supported-operations table "
                  "(https://coral.ai/docs/edgetpu/models-intro/#supported-operations).")]
        return "\n".join(lines) + "\n"

    def write(self, stem: Path) -> None:
        from device.atomic import atomic_write

        atomic_write(Path(f"{stem}.json"), json.dumps(self.to_dict(), indent=2) + "\n")
        atomic_write(Path(f"{stem}.md"), self.to_markdown())


def check_model(path) -> Readiness:
    schema = _schema()
    model = load_model(path)
    op_names, type_names = _names(schema.BuiltinOperator), _names(schema.TensorType)
    report = Readiness(model=str(path))
    if len(model.subgraphs) != 1:
        report.findings.append(Finding(f"{len(model.subgraphs)} subgraphs: more than one subgraph (control flow) "
                                       "is not supported"))
    graph = model.subgraphs[0]
    tensors, buffers = graph.tensors, model.buffers

    def name(index):  # the first of the fused names TFLite joins with ';' is enough to find the layer
        text = tensors[index].name.decode("utf-8", "replace") if tensors[index].name else ""
        return text.split(";")[0] or f"#{index}"

    def constant(index):
        buffer = buffers[tensors[index].buffer] if tensors[index].buffer < len(buffers) else None
        return buffer is not None and (buffer.data is not None or getattr(buffer, "size", 0) > 1)

    def shape(index):
        return [int(d) for d in (tensors[index].shape if tensors[index].shape is not None else [])]

    for side, indices in (("input", graph.inputs), ("output", graph.outputs)):
        for index in indices:
            kind = type_names[tensors[index].type]
            if kind not in QUANTIZED:
                report.findings.append(Finding(f"model {side} is {kind}, not int8/uint8: the model is not fully "
                                               "integer-quantized (convert with --formats int8)", tensor=name(index)))
            if side == "input" and shape(index)[:1] != [1]:
                report.findings.append(Finding(f"input batch size is {shape(index)[:1]}, must be 1",
                                               tensor=name(index)))
    operators = graph.operators if graph.operators is not None else []
    report.operations = len(operators)
    for op_index, op in enumerate(operators):
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        op_name = op_names.get(builtin, str(builtin))
        if op_name == "CUSTOM":
            op_name = f"CUSTOM({(code.customCode or b'').decode()})"
        report.op_counts[op_name] = report.op_counts.get(op_name, 0) + 1
        problems = _op_problems(op_name, op, tensors, type_names, constant, shape, name)
        merged: dict = {}  # one finding per problem and op, naming its tensors
        for problem, tensor in problems:
            merged.setdefault(problem, [])
            if tensor and tensor not in merged[problem]:
                merged[problem].append(tensor)
        for problem, names in merged.items():
            report.findings.append(Finding(problem, op_index, op_name, ", ".join(names)))
        if problems and report.first_cpu_op < 0:
            report.first_cpu_op = op_index
    return report


def _op_problems(op_name, op, tensors, type_names, constant, shape, name) -> list:
    problems = []
    if op_name not in SUPPORTED_OPS:
        problems.append((f"{op_name} is not in the Edge TPU's supported operations", ""))
    inputs = [i for i in (op.inputs if op.inputs is not None else []) if i >= 0]
    outputs = [i for i in (op.outputs if op.outputs is not None else []) if i >= 0]
    for index in inputs + outputs:
        tensor = tensors[index]
        kind = type_names[tensor.type]
        is_const = constant(index)
        if kind not in QUANTIZED and not (kind == "INT32" and is_const):
            problems.append((f"tensor is {kind}: not 8-bit quantized", name(index)))
        elif kind in QUANTIZED and (tensor.quantization is None or tensor.quantization.scale is None
                                    or len(tensor.quantization.scale) == 0):
            problems.append(("8-bit tensor without quantization parameters", name(index)))
        signature = tensor.shapeSignature
        if signature is not None and any(int(d) < 0 for d in signature):
            problems.append((f"dynamic shape {list(map(int, signature))}: sizes must be static", name(index)))
        dims = shape(index)
        if not is_const and len(dims) > 3 and sum(d > 1 for d in dims[:-3]) > 0:
            problems.append((f"{len(dims)}-D tensor {dims}: only the 3 innermost dimensions may exceed 1",
                             name(index)))
    if op_name in WEIGHTED_OPS and len(inputs) > 1 and not constant(inputs[1]):
        problems.append(("weights are not a compile-time constant", name(inputs[1])))
    options = op.builtinOptions
    activation = getattr(options, "fusedActivationFunction", 0)
    if op_name in NO_FUSED_ACTIVATION and activation:
        problems.append(("fused activation function is not supported on this op", ""))
    if op_name == "DEPTHWISE_CONV_2D" and options is not None and options.dilationWFactor != options.dilationHFactor:
        problems.append(("different dilation in x and y", ""))
    if op_name == "FULLY_CONNECTED" and options is not None:
        if options.weightsFormat != 0:
            problems.append(("non-default fully-connected weights format", ""))
        if outputs and sum(d > 1 for d in shape(outputs[0])) > 1:
            problems.append((f"output {shape(outputs[0])} is not one-dimensional", name(outputs[0])))
    if op_name == "SOFTMAX" and inputs:
        dims = shape(inputs[0])
        if sum(d > 1 for d in dims) > 1 or int(np.prod(dims or [0])) > SOFTMAX_MAX_ELEMENTS:
            problems.append((f"input {dims}: only a 1-D input of at most {SOFTMAX_MAX_ELEMENTS} elements",
                             name(inputs[0])))
    return problems


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m convert.readiness", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("model", nargs="+", help=".tflite file(s) to check")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    ready = True
    for path in args.model:
        if not Path(path).is_file():
            print(f"{path} does not exist: pass a .tflite file, e.g. artifacts/rps/tflite/model_int8.tflite",
                  file=sys.stderr)
            return 2
        report = check_model(path)
        print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_markdown())
        ready = ready and report.ready
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())
