#!/bin/bash
# Ship the end of a finished training run as the default reader, then re-measure every figure the
# README, the model card and docs/ take from that reader, in one unattended sequence (about an hour
# on 2 idle cores), so the cores never wait for a person between steps:
#   1. two candidates: the run's final model (RUN) and the mean of its last 4 snapshots (RUN-avg4,
#      kotae.reader_training.snapshots); each scored by `kotae evaluate` on the first 1,000 questions
#      of JaQuAD dev and squad-dev (about 5 min a candidate). The one with the higher mean of the four
#      numbers (EM and F1 of both sets) is shipped; both lines are printed and kept;
#   2. its fp16 delta exported into kotae/weights/reader-e5-small-ja-en (the model card is kept: it is
#      rewritten by hand from these figures), then `kotae models prepare` rebuilds the alias;
#   3. bench/reader_figures.sh (whole dev sets, Japanese miss classes, the card's 100-question slices),
#      the answers of `make demo`, bench/speed_table.sh (as its "now" side), bench/bench_pipeline.py
#      --gold-only --questions 50 --threads 2, and bench/eval_rows.sh (docs/measure.md's rows).
# Everything lands in runs/release/NAME/ (NAME defaults to the run folder's name). Run it when the
# training has finished (it uses both cores and the run's final model).
# Usage: bash bench/reader_release.sh RUN [NAME]      e.g. bash bench/reader_release.sh runs/reader-rest
#   CHOOSE_ONLY=1: stop after step 1 (nothing tracked changes); CHOOSE_LIMIT=N: score on N questions (1000).
# Afterwards: put the figures in the model card (its 100-question table is what
# tests/test_default_reader.py checks), README.md and docs/; `git diff --stat` shows the new weights.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:?usage: bash bench/reader_release.sh RUN [NAME]}
NAME=${2:-$(basename "$RUN")}
OUT=runs/release/$NAME
ALIAS=reader-e5-small-ja-en
PY=.venv/bin/python
KOTAE=.venv/bin/kotae
[ -f "$RUN/model.safetensors" ] || { echo "error: $RUN: no model.safetensors (has the run finished?)" >&2; exit 2; }
mkdir -p "$OUT"
echo "$RUN -> $OUT; load average at start $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs, $(date -u)" | tee "$OUT/setup.txt"

# 1. candidates, scored on the first 1,000 questions of each dev set
"$PY" -m kotae.reader_training.snapshots "$RUN" --frame "$RUN" --last 4 --out "$RUN-avg4"
for candidate in "$RUN" "$RUN-avg4"; do
  tag=$(basename "$candidate")
  for data in jaquad/dev squad-dev; do
    set=${data//\//-}
    "$KOTAE" evaluate --model "$candidate" --data "../shared/data/$data" --limit "${CHOOSE_LIMIT:-1000}" --threads 2 --json \
      > "$OUT/choose-$tag-$set.json"
  done
done
CHOSEN=$("$PY" - "$OUT" "$RUN" "$RUN-avg4" <<'EOF'
import json, sys
from pathlib import Path

out, candidates = Path(sys.argv[1]), sys.argv[2:]
def mean_score(candidate: str) -> float:
    scores = [json.loads((out / f"choose-{Path(candidate).name}-{s}.json").read_text()) for s in ("jaquad-dev", "squad-dev")]
    for s, name in zip(scores, ("jaquad-dev", "squad-dev")):
        print(f"{candidate}: {name} first {s['n']} EM {s['exact_match']:.2f} F1 {s['f1']:.2f}", file=sys.stderr)
    return sum(s["exact_match"] + s["f1"] for s in scores) / 4
best = max(candidates, key=mean_score)
print(best)
EOF
)
echo "shipping $CHOSEN" | tee "$OUT/chosen.txt"
[ -z "${CHOOSE_ONLY:-}" ] || exit 0

# 2. export (the hand-written model card survives) and prepare
cp "kotae/weights/$ALIAS/model_card.md" "$OUT/model_card.before.md"
"$PY" -m kotae.reader_training.export "$CHOSEN" "kotae/weights/$ALIAS"
cp "$OUT/model_card.before.md" "kotae/weights/$ALIAS/model_card.md"
"$KOTAE" models prepare

# 3. every figure taken from the default reader
bash bench/reader_figures.sh "$ALIAS" "release-$NAME" 2>&1 | tee "$OUT/figures.txt"
make demo 2>&1 | tee "$OUT/demo.txt"
bash bench/speed_table.sh . "release-$NAME" 2>&1 | tee "$OUT/speed.txt"
"$PY" bench/bench_pipeline.py --gold-only --questions 50 --threads 2 2>&1 | tee "$OUT/pipeline.txt"
bash bench/eval_rows.sh 2>&1 | tee "$OUT/eval_rows.txt"
echo "done $(date -u)" | tee -a "$OUT/setup.txt"
