#!/usr/bin/env bash
# Two local workers (--strategy multi-worker, TF_CONFIG on loopback) against one process on the same data:
# prints each run's wall time and its last epoch's time (steady state, after tracing). One machine shares its
# cores between the workers, so expect a slow-down here; the speed-up needs machines with their own cores.
#
#   scripts/multiworker_speed.sh DATA [EPOCHS] [extra python -m train flags]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: $0 DATA [EPOCHS] [python -m train flags]}
EPOCHS=${2:-3}
shift $(( $# >= 2 ? 2 : 1 ))
PY=${PY:-.venv/bin/python}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
FLAGS=(--data "$DATA" --model small --image-size 48 --epochs "$EPOCHS" --batch-size 32 --no-augment "$@")
export TF_CPP_MIN_LOG_LEVEL=3

last_epoch() {  # Keras: "4/4 - 3s - ..." after "Epoch N/N"; multi-worker: "Epoch N/N - 3s - ..."
  grep -A1 "^Epoch $EPOCHS/$EPOCHS" "$1" | grep -oE -- '- [0-9.]+m?s' | head -1 | sed 's/^- //'
}

start=$(date +%s.%N)
"$PY" -m train "${FLAGS[@]}" --out "$OUT/single" >"$OUT/single.log" 2>&1
single=$(echo "$(date +%s.%N) - $start" | bc)

ports=$("$PY" -c 'import socket
s = [socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1", 0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))')
read -r p0 p1 <<<"$ports"
start=$(date +%s.%N)
for i in 0 1; do
  TF_CONFIG="{\"cluster\": {\"worker\": [\"127.0.0.1:$p0\", \"127.0.0.1:$p1\"]}, \"task\": {\"type\": \"worker\", \"index\": $i}}" \
    "$PY" -m train "${FLAGS[@]}" --strategy multi-worker --out "$OUT/worker$i" >"$OUT/worker$i.log" 2>&1 &
done
wait
two=$(echo "$(date +%s.%N) - $start" | bc)

printf 'one process : %6.1f s wall, last epoch %s\n' "$single" "$(last_epoch "$OUT/single.log")"
printf 'two workers : %6.1f s wall, last epoch %s (chief)\n' "$two" "$(last_epoch "$OUT/worker0.log")"
printf 'two workers / one process, wall: %.2f\n' "$(echo "$two / $single" | bc -l)"
