#!/bin/bash
# One side of issue 20's speed table, default config, on this machine:
#   1. `kotae eval` on the first $LIMIT (300) questions of JaQuAD dev and squad-dev: per-question
#      latency p50/p95 (retrieval + reader) and end-to-end EM/F1;
#   2. 32 clients against a real `kotae serve` for 60 s (bench/bench_load.py): answers/s, errors, memory;
#   3. a cold-start `kotae ask` (bench/bench_cold_start.py), in-process and, where the checkout has it,
#      through a running `kotae serve` (--server auto).
# The kotae timed is CHECKOUT's .venv/bin/kotae, so "before" is an older checkout with its own venv:
#   git worktree add ../kotae-before f832f3b && make -C ../kotae-before install
#   KOTAE_HOME=/tmp/kotae-before-home bash bench/speed_table.sh ../kotae-before before
#   bash bench/speed_table.sh . after
# Results go to runs/speed/NAME/ (eval-*.json, load.json/.md, cold.txt). Run it on an idle machine
# (pause any training with kill -STOP) and say so; the load average at the start is recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKOUT=$(cd "${1:-.}" && pwd)
NAME=${2:-after}
PY=$CHECKOUT/.venv/bin/python
KOTAE=$CHECKOUT/.venv/bin/kotae
OUT=runs/speed/$NAME
LIMIT=${LIMIT:-300}
THREADS=${THREADS:-2}
mkdir -p "$OUT"
echo "$NAME: $KOTAE, load average at start $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs" | tee "$OUT/setup.txt"

for data in jaquad/dev squad-dev; do
  set=${data%%/*}
  "$KOTAE" eval --config default --data "../shared/data/$data" --limit "$LIMIT" --threads "$THREADS" \
    --out "$OUT/eval-$set" --json > "$OUT/eval-$set.json" 2> "$OUT/eval-$set.err"
  echo "eval $set: $(cat "$OUT/eval-$set.json")"
done

"$PY" bench/bench_load.py --clients 32 --duration 60 --output "$OUT/load.md" > "$OUT/load.json"
cat "$OUT/load.md"

server=()
if "$KOTAE" ask --help 2>/dev/null | grep -q -- "--server"; then server=(--server); fi
"$PY" bench/bench_cold_start.py --kotae "$KOTAE" --config default --config bm25 --repeat 3 "${server[@]}" \
  | tee "$OUT/cold.txt"
