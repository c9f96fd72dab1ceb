#!/bin/bash
# Every figure of the default reader's model card, for one reader (the prepared alias by default),
# on JaQuAD dev, then squad-dev:
#   1. the whole set: EM/F1 as `kotae evaluate` scores them (same decoder,
#      same metric), at token edges ("plain") and with the span-edge table ("edges"), and the Japanese
#      EM misses by class (bench/span_edges.py; each set's window logits are cached in runs/figures/NAME/,
#      so a second run of the same NAME only re-decodes);
#   2. the card's regression slice: `kotae evaluate --limit 100` (tests/test_default_reader.py).
# Usage: bash bench/reader_figures.sh [MODEL] [NAME]
#   MODEL: a reader folder or alias (default reader-e5-small-ja-en); NAME: the output folder (default: MODEL's name)
# Both torch threads are used: pause any training first (kill -STOP <pid>) and say so with the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-reader-e5-small-ja-en}
NAME=${2:-$(basename "$MODEL")}
OUT=runs/figures/$NAME
mkdir -p "$OUT"
echo "$MODEL -> $OUT; load average at start $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs" | tee "$OUT/setup.txt"

for data in jaquad/dev squad-dev; do
  set=${data//\//-}
  .venv/bin/python bench/span_edges.py --model "$MODEL" --data "../shared/data/$data" \
    --cache "$OUT/$set.npz" --examples 2 | tee "$OUT/$set-whole.txt"
  .venv/bin/kotae evaluate --model "$MODEL" --data "../shared/data/$data" --limit 100 --threads 2 --json \
    > "$OUT/$set-100.json"
  echo "first 100, $set: $(cat "$OUT/$set-100.json")"
done
