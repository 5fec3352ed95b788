"""Optional Edge TPU compilation: run Coral's edgetpu_compiler on the int8 model when it is on PATH.

    edgetpu_compiler -s -o OUT_DIR tflite/model_int8.tflite
      -> OUT_DIR/model_int8_edgetpu.tflite, OUT_DIR/model_int8_edgetpu.log (the operation log)

The compiled model goes to tflite/model_int8_edgetpu.tflite; the compiler's output and its operation log
go to edgetpu/compiler.log and edgetpu/model_int8_edgetpu.log. The operation table ("Operator Count
Status") says how many ops were mapped to the Edge TPU and which run on the CPU, and why.
Never required: without the compiler, or when it fails, the rest of the conversion still succeeds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from device.atomic import atomic_write, atomic_write_with
from device.layout import EDGETPU_FORMAT, model_filename

COMPILER = "edgetpu_compiler"
MAPPED = "Mapped to Edge TPU"
INSTALL_HINT = (
    "edgetpu_compiler is not on PATH, so the Edge TPU model was not compiled (everything else succeeded). "
    "It runs on x86-64 Debian/Ubuntu: add Coral's apt repository and install it (see "
    "https://coral.ai/docs/edgetpu/compiler/: 'sudo apt-get install edgetpu-compiler'), or compile "
    "tflite/model_int8.tflite in Coral's Colab notebook; then run again with --edgetpu. "
    "edgetpu/readiness.md already lists what the Edge TPU would not run."
)
_ROW = re.compile(r"^([A-Z][A-Z0-9_]*(?:\([^)]*\))?)\s+(\d+)\s+(\S.*?)\s*$")


@dataclass
class CompileResult:
    available: bool
    command: list[str] = field(default_factory=list)
    returncode: int | None = None
    version: str = ""
    model: str | None = None
    log: str | None = None
    operation_log: str | None = None
    operations: list[dict] = field(default_factory=list)  # {"operator", "count", "status"}
    message: str = ""

    @property
    def succeeded(self) -> bool:
        return self.model is not None

    @property
    def mapped(self) -> int:
        return sum(row["count"] for row in self.operations if row["status"] == MAPPED)

    @property
    def on_cpu(self) -> list[dict]:
        return [row for row in self.operations if row["status"] != MAPPED]

    def summary(self) -> str:
        if not self.available or not self.succeeded:
            return self.message
        total = sum(row["count"] for row in self.operations)
        text = f"compiled {Path(self.model).name} ({self.version}): {self.mapped} of {total} operations mapped to the Edge TPU"
        if self.on_cpu:
            text += "; on the CPU: " + ", ".join(f"{r['operator']} x{r['count']} ({r['status']})" for r in self.on_cpu)
        return text + f"; log: {self.log}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(succeeded=self.succeeded, mapped=self.mapped, on_cpu=self.on_cpu)
        return data


def parse_operation_table(text: str) -> list[dict]:
    """The 'Operator  Count  Status' table of the compiler's operation log (or its -s output)."""
    rows, inside = [], False
    for line in text.splitlines():
        if re.match(r"^\s*Operator\s+Count\s+Status\s*$", line):
            inside = True
            continue
        if inside:
            match = _ROW.match(line.strip())
            if match:
                rows.append({"operator": match[1], "count": int(match[2]), "status": match[3]})
            elif line.strip() and rows:
                inside = False
    return rows


def _replace_with(source: Path, target: Path) -> None:
    """Put SOURCE's bytes at TARGET as a new file: copied beside TARGET, then renamed over it. TARGET may be a
    staging folder's hard link of the live bundle's file, so it must never be opened for writing (shutil.move
    does exactly that when SOURCE is on another file system, e.g. a tmpfs /tmp)."""
    def copy(stream) -> None:
        with open(source, "rb") as original:
            shutil.copyfileobj(original, stream)

    atomic_write_with(target, copy, mode=os.stat(source).st_mode & 0o777)  # the compiler's mode, not mkstemp's 0600


def compile_for_edgetpu(model: Path, tflite_dir: Path, log_dir: Path, compiler: str = COMPILER,
                        timeout_s: int = 600) -> CompileResult:
    executable = shutil.which(compiler)
    if executable is None:
        return CompileResult(available=False, message=INSTALL_HINT)
    model, log_dir = Path(model), Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "compiler.log"
    with tempfile.TemporaryDirectory(prefix="edgetpu-") as scratch:
        command = [executable, "-s", "-o", scratch, str(model)]
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
            output, returncode = run.stdout + run.stderr, run.returncode
        except subprocess.TimeoutExpired as error:
            output, returncode = f"{error.stdout or ''}{error.stderr or ''}\n(timed out after {timeout_s} s)", -1
        atomic_write(log, f"$ {' '.join(command)}\n{output}")  # replace, never modify: see device/layout.py
        version = next(iter(re.findall(r"Edge TPU Compiler version (\S+)", output)), "")
        result = CompileResult(available=True, command=command, returncode=returncode, version=version,
                               log=str(log))
        compiled = Path(scratch) / f"{model.stem}_edgetpu.tflite"
        operation_log = Path(scratch) / f"{model.stem}_edgetpu.log"
        if returncode != 0 or not compiled.is_file():
            last = " | ".join(line for line in output.strip().splitlines()[-3:])
            result.message = (f"edgetpu_compiler failed (exit {returncode}): {last}. Full output: {log}. "
                              "edgetpu/readiness.md lists the ops and tensors the Edge TPU cannot run.")
            return result
        target = Path(tflite_dir) / model_filename(EDGETPU_FORMAT)
        _replace_with(compiled, target)
        result.model = str(target)
        table_source = output
        if operation_log.is_file():
            kept = log_dir / operation_log.name
            _replace_with(operation_log, kept)
            result.operation_log = str(kept)
            table_source = kept.read_text(encoding="utf-8", errors="replace")
        result.operations = parse_operation_table(table_source) or parse_operation_table(output)
    return result
