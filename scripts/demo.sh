#!/usr/bin/env bash
# make demo: built-in data -> train the reference CNN -> convert + parity -> daemon on held-out frames.
# Everything offline; each stage is skipped when its output is already there and up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/rps}
BUNDLE=${BUNDLE:-artifacts/rps}
CALIBRATION=${CALIBRATION:-calibration_data/rps}
EPOCHS=${EPOCHS:-15}
PORT=${PORT:-8080}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}  # 3: also hides TF's benign C++ "NodeDef mentions attribute" lines
started=$(date +%s)
stage() { printf '\n==== [%s/4] %s (%ss elapsed)\n' "$1" "$2" "$(( $(date +%s) - started ))"; }

stage 1 "generate the built-in rock-paper-scissors images -> $DATA, $CALIBRATION"
$PY -m train.datagen --out "$DATA" --calibration-out "$CALIBRATION"

stage 2 "train the reference CNN -> $BUNDLE"
if [ -f "$BUNDLE/manifest.json" ] && [ "$BUNDLE/manifest.json" -nt "$DATA/dataset.json" ] && [ -z "${RETRAIN:-}" ]; then
  echo "$BUNDLE already holds a bundle trained on this data: reusing it (RETRAIN=1 make demo, or make train, to train again)"
else
  $PY -m train --data "$DATA" --out "$BUNDLE" --epochs "$EPOCHS" --overwrite
fi

stage 3 "convert to TFLite (float32, float16, dynamic, int8) and check accuracy parity"
$PY -m convert "$BUNDLE" --calibration "$CALIBRATION"

stage 4 "run the device daemon (int8 model) on the held-out frames"
$PY -m device --bundle "$BUNDLE" --model int8 --source "images:$DATA/test" --once --http off --emit every --smoothing 1 --max-fps 0 \
  | $PY scripts/demo_summary.py "$BUNDLE"

printf '\nDone in %ss.\n' "$(( $(date +%s) - started ))"
if [ -t 0 ] && [ -t 1 ] && [ "${DEMO_KIOSK:-1}" != 0 ]; then
  # Interactive: leave the daemon running with the kiosk page, replaying the held-out frames as a camera.
  printf '\n==== kiosk: open http://127.0.0.1:%s/ and press Play (or Space) to play rock-paper-scissors\n' "$PORT"
  echo "     the daemon replays $DATA/test as its camera; Ctrl+C stops it (DEMO_KIOSK=0 make demo skips this)"
  exec $PY -m device --bundle "$BUNDLE" --model int8 --source "images:$DATA/test" --max-fps 10 --emit off \
    --http "127.0.0.1:$PORT"
fi
echo "Next:"
echo "  make kiosk     # live page + rock-paper-scissors game at http://127.0.0.1:$PORT/ (replays $DATA/test)"
echo "  make bench     # daemon vs raw interpreter: latency, memory, cold start"
echo "  make teach-demo  # teach the model on camera-style frames it reads poorly: built-in vs taught accuracy"
echo "  make bundle    # dist/edgecam-device-rps.tar.gz for a Raspberry Pi (see README)"
