#!/usr/bin/env bash
# Runs the device daemon as on Raspberry Pi OS: tflite-runtime 2.14 with numpy<2, no TensorFlow, no
# ai-edge-litert, in its own small virtual environment (.venv-tflite, created once and reused).
#
#   scripts/tflite_runtime_compat.sh BUNDLE IMAGES_DIR [extra python -m device flags]
#
# prints the daemon's JSON result lines (one pass over IMAGES_DIR). Exit codes: the daemon's, or 3 when the
# environment cannot be created (no network to PyPI, or no tflite-runtime wheel for this Python).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 2 ]; then
    echo "usage: $0 BUNDLE IMAGES_DIR [python -m device flags...]" >&2
    exit 2
fi
BUNDLE=$1
IMAGES=$2
shift 2
VENV=${EDGECAM_TFLITE_VENV:-.venv-tflite}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.edgecam-tflite-runtime-2.14"

if [ ! -f "$STAMP" ]; then
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV" >&2; then
        echo "tflite_runtime_compat: cannot create $VENV with $PYTHON" >&2
        exit 3
    fi
    # tflite-runtime 2.14 has wheels for CPython 3.8-3.11 (x86_64, aarch64): the Pi OS Bookworm versions.
    if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            "tflite-runtime==2.14.0" "numpy<2" "pillow>=9.4" >&2; then
        echo "tflite_runtime_compat: pip could not install tflite-runtime==2.14.0 'numpy<2' pillow into $VENV" \
             "(no network, or no wheel for $("$VENV/bin/python" -V 2>&1))" >&2
        rm -rf "$VENV"
        exit 3
    fi
    touch "$STAMP"
fi

# No TensorFlow and no ai-edge-litert in this environment: the loader must pick tflite_runtime by itself.
"$VENV/bin/python" - >&2 <<'PY'
import importlib.util, sys
import numpy, tflite_runtime
assert numpy.__version__.startswith("1."), numpy.__version__
for name in ("tensorflow", "ai_edge_litert"):
    assert importlib.util.find_spec(name) is None, f"{name} must not be installed in this environment"
print(f"tflite_runtime_compat: tflite-runtime {tflite_runtime.__version__}, numpy {numpy.__version__}, "
      f"Python {sys.version.split()[0]}", file=sys.stderr)
PY
PYTHONPATH="$PWD" exec "$VENV/bin/python" -m device --bundle "$BUNDLE" --source "images:$IMAGES" --once \
    --http off --max-fps 0 --smoothing 1 "$@"
