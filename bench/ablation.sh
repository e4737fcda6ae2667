#!/usr/bin/env bash
# Accuracy of the default trainer against the variants it was chosen over, mean over
# seeds 0, 1, 2: CLINC150 10-shot (150 intents + out-of-scope; ../shared/data/clinc150)
# and the bundled commit-message split. Writes bench/results/*.json and prints one line
# per variant (the tables in README.md). Usage: bash bench/ablation.sh [clinc|commits]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p bench/results
run() {
  local data=$1 name=$2; shift 2
  "$PY" bench/accuracy.py --dataset "$data" --out "bench/results/$data-$name.json" -- "$@" \
    | tail -n 1 | sed "s/^/$data $name: /"
}
if [ "${1:-clinc}" = clinc ]; then
  run clinc default
  run clinc fine-tune-all-layers --fine-tune-layers all
  run clinc frozen --no-fine-tune
  run clinc frozen-seed-triplet --no-fine-tune --head seed --loss triplet
fi
if [ "${1:-commits}" = commits ]; then
  run commits default
  run commits fine-tune-all-layers --fine-tune-layers all
  run commits frozen --no-fine-tune
  run commits frozen-residual-proxy --no-fine-tune --head residual --loss proxy
  run commits original-recipe --no-fine-tune --head seed --loss triplet --mining random --ensemble 1 --preprocess none
fi
