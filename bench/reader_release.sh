#!/bin/bash
# Ship the end of a finished training run as the default reader, then re-measure every figure the
# README, the model card and docs/ take from that reader, in one unattended sequence (about an hour
# on 2 idle cores), so the cores never wait for a person between steps:
#   1. the bar and two candidates, each scored by `kotae evaluate` on the first 1,000 questions of
#      JaQuAD dev and squad-dev (about 3 min a set): the shipped reader (the prepared alias), the
#      run's final model (RUN) and the mean of its last 4 snapshots (RUN-avg4,
#      kotae.reader_training.snapshots). The candidate with the higher mean of its four numbers (EM
#      and F1 of both sets) is chosen, and shipped only if it beats the shipped reader on both sets
#      (the mean of EM and F1 of each set higher). Otherwise the script measures the chosen
#      candidate's whole-set figures (bench/reader_figures.sh on the run folder, for the note) and
#      stops with nothing tracked changed;
#   2. its fp16 delta exported into kotae/weights/reader-e5-small-ja-en (the model card is kept: it is
#      rewritten by hand from these figures), then `kotae models prepare` rebuilds the alias;
#   3. bench/reader_figures.sh (whole dev sets, Japanese miss classes, the card's 100-question slices),
#      the answers of `make demo`, bench/speed_table.sh (as its "now" side), bench/bench_pipeline.py
#      --gold-only --questions 50 --threads 2, and bench/eval_rows.sh (docs/measure.md's rows).
# Everything lands in runs/release/NAME/ (NAME defaults to the run folder's name). Step 1 keeps its
# scores and chosen.txt, and each step of 3 that finishes leaves NAME/STEP.done, so the same command
# after a stop (a session's end, a crash) goes on from the first unfinished step; delete
# runs/release/NAME to start over. A stop after step
# 2 leaves the new weights uncommitted in kotae/weights (`git checkout kotae/weights` undoes them).
# Run it when the training has finished (it uses both cores and the run's final model).
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
echo "$RUN -> $OUT; load average at start $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs, $(date -u)" | tee -a "$OUT/setup.txt"

# step NAME COMMAND...: run COMMAND once, its output shown and kept in $OUT/NAME.txt
step() {
  local name=$1
  shift
  if [ -f "$OUT/$name.done" ]; then echo "step $name: done before, skipped"; return; fi
  echo "step $name: $* ($(date -u +%H:%M:%S))"
  "$@" 2>&1 | tee "$OUT/$name.txt"
  touch "$OUT/$name.done"
}

# score TAG MODEL: EM/F1 of MODEL on the first CHOOSE_LIMIT questions of each dev set, in choose-TAG-SET.json
score() {
  local tag=$1 model=$2 data set
  for data in jaquad/dev squad-dev; do
    set=${data//\//-}
    [ -s "$OUT/choose-$tag-$set.json" ] && continue
    "$KOTAE" evaluate --model "$model" --data "../shared/data/$data" --limit "${CHOOSE_LIMIT:-1000}" --threads 2 --json \
      > "$OUT/choose-$tag-$set.json.part"
    mv "$OUT/choose-$tag-$set.json.part" "$OUT/choose-$tag-$set.json"
  done
}

# 1. the bar and the candidates, scored on the first 1,000 questions of each dev set
if [ ! -f "$OUT/chosen.txt" ]; then
  [ -f "$RUN-avg4/model.safetensors" ] || "$PY" -m kotae.reader_training.snapshots "$RUN" --frame "$RUN" --last 4 --out "$RUN-avg4"
  score shipped "$ALIAS"
  score end "$RUN"
  score avg4 "$RUN-avg4"
  "$PY" - "$OUT" "$RUN" "$RUN-avg4" > "$OUT/chosen.txt.part" <<'EOF'
import json, sys
from pathlib import Path

out, run, avg4 = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
SETS = ("jaquad-dev", "squad-dev")

def scores(tag: str) -> dict[str, float]:
    """Mean of EM and F1 per dev set, printed as they were measured."""
    means = {}
    for name in SETS:
        s = json.loads((out / f"choose-{tag}-{name}.json").read_text())
        print(f"{tag}: {name} first {s['n']} EM {s['exact_match']:.2f} F1 {s['f1']:.2f}")
        means[name] = (s["exact_match"] + s["f1"]) / 2
    return means

bar = scores("shipped")
candidates = {run: scores("end"), avg4: scores("avg4")}
chosen = max(candidates, key=lambda c: sum(candidates[c].values()))  # ties: the run's end
beats = all(candidates[chosen][name] > bar[name] for name in SETS)
print(f"{'ship' if beats else 'keep the shipped reader; best candidate'} {chosen}")
EOF
  mv "$OUT/chosen.txt.part" "$OUT/chosen.txt"
fi
cat "$OUT/chosen.txt"
DECISION=$(tail -1 "$OUT/chosen.txt")
CHOSEN=${DECISION##* }
[ -z "${CHOOSE_ONLY:-}" ] || exit 0
if [ "${DECISION%% *}" != ship ]; then
  step candidate-figures bash bench/reader_figures.sh "$CHOSEN" "candidate-$NAME"
  exit 0
fi

# 2. export (the hand-written model card survives) and prepare; run again on every resume (about
# 2 min), since a .done file could not tell whether kotae/weights was reset since
[ -f "$OUT/model_card.before.md" ] || cp "kotae/weights/$ALIAS/model_card.md" "$OUT/model_card.before.md"
"$PY" -m kotae.reader_training.export "$CHOSEN" "kotae/weights/$ALIAS" 2>&1 | tee "$OUT/export.txt"
cp "$OUT/model_card.before.md" "kotae/weights/$ALIAS/model_card.md"
"$KOTAE" models prepare 2>&1 | tee "$OUT/prepare.txt"

# 3. every figure taken from the default reader
step figures bash bench/reader_figures.sh "$ALIAS" "release-$NAME"
step demo make demo
step speed bash bench/speed_table.sh . "release-$NAME"
step pipeline "$PY" bench/bench_pipeline.py --gold-only --questions 50 --threads 2
step eval_rows bash bench/eval_rows.sh
echo "done $(date -u)" | tee -a "$OUT/setup.txt"
