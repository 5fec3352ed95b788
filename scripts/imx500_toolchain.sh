#!/usr/bin/env bash
# Build (once) the Sony IMX500 host toolchain in a venv of its own, outside the repository:
#   ~/.cache/edgecam/imx500-toolchain-<key>/  (key = the pinned versions below)
# It holds Python 3.11, edge-mdt[tf] (Model Compression Toolkit + imx500-converter, TensorFlow 2.15/Keras 2,
# numpy<2). Sony's converter is under Sony's licence: it is installed from PyPI here, never vendored.
# The converter (imxconv-tf) is Java: it needs a Java 17 runtime (Debian openjdk-17-jre-headless).
# Prints the venv's path on its last line. Exit 2 when something must be done by hand (message says what).
# --check: install nothing; print the path when the toolchain is complete, else say which command builds it.
set -euo pipefail

PIN_EDGE_MDT="edge-mdt[tf]==1.3.0"
PYTHON="${EDGECAM_IMX500_PYTHON:-$(command -v python3.11 || command -v python3 || echo python3.11)}"
CACHE="${EDGECAM_CACHE:-$HOME/.cache/edgecam}"
KEY="py311-edge-mdt-1.3.0"
VENV="$CACHE/imx500-toolchain-$KEY"
STAMP="$VENV/.edgecam-complete"

ensure_java() {
    if java -version 2>&1 | grep -qE 'version "(1[7-9]|2[0-9])'; then return 0; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "imx500-toolchain: installing Java 17 (openjdk-17-jre-headless) with apt-get" >&2
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >&2
        return 0
    fi
    echo "imx500-toolchain: the converter needs Java 17: run 'sudo apt-get install openjdk-17-jre-headless' and make imx500-toolchain again" >&2
    exit 2
}

if [ "${1:-}" = "--check" ]; then
    if [ ! -f "$STAMP" ]; then
        echo "The IMX500 toolchain ($PIN_EDGE_MDT in $VENV) is not built: run make imx500-toolchain, then convert again." >&2
        exit 2
    fi
    if ! java -version 2>&1 | grep -qE 'version "(1[7-9]|2[0-9])'; then
        echo "The IMX500 converter needs Java 17: run 'sudo apt-get install openjdk-17-jre-headless' (or make imx500-toolchain as root), then convert again." >&2
        exit 2
    fi
    echo "$VENV"; exit 0
fi
ensure_java
if [ -f "$STAMP" ]; then echo "$VENV"; exit 0; fi
"$PYTHON" -c 'import sys; sys.exit(not (3, 9) <= sys.version_info[:2] <= (3, 11))' 2>/dev/null || {
    echo "imx500-toolchain: Sony's toolchain needs Python 3.9-3.11 ($PYTHON is not): install python3.11 (or set EDGECAM_IMX500_PYTHON=/path/to/python3.11)" >&2
    exit 2
}
mkdir -p "$CACHE"
exec 9>"$CACHE/imx500-toolchain-$KEY.lock"
flock 9
if [ ! -f "$STAMP" ]; then
    echo "imx500-toolchain: building $VENV ($PIN_EDGE_MDT, about 2 GB, a few minutes once)" >&2
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    "$VENV/bin/python" -m pip install --quiet "$PIN_EDGE_MDT" >&2
    "$VENV/bin/python" -c "import model_compression_toolkit, tensorflow" >&2
    test -x "$VENV/bin/imxconv-tf"
    touch "$STAMP"
fi
echo "$VENV"
