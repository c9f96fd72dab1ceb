#!/bin/bash
# The six kotae eval rows of docs/measure.md (issue 9) + the raw-vs-margin ranking comparison, with the default reader.
cd "$(dirname "$0")/.."
LIMIT=${LIMIT:-100}
mkdir -p runs/eval
run() {  # name config data [extra...]
  local name=$1 cfg=$2 data=$3; shift 3
  .venv/bin/kotae eval --config configs/pipeline/$cfg.yaml --data ../shared/data/$data --limit $LIMIT \
      --out runs/eval/$name --threads ${THREADS:-1} "$@" --json > runs/eval/$name.json 2> runs/eval/$name.err
  echo "$name $(cat runs/eval/$name.json)"
}
run jaquad-default default jaquad/dev
run jaquad-default-raw default jaquad/dev --set reader.relative_scores=false
run jaquad-dense dense jaquad/dev
run jaquad-bm25 bm25 jaquad/dev
run squad-default default squad-dev
run squad-dense dense squad-dev
run squad-bm25 bm25 squad-dev
