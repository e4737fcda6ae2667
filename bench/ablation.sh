#!/usr/bin/env bash
# Accuracy of the default trainer against the variants it was chosen over, on the
# bundled commit-message split, mean over seeds 0, 1, 2. Writes bench/results/*.json
# and prints one line per variant (the table in README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p bench/results
run() {
  local name=$1; shift
  "$PY" bench/accuracy.py --out "bench/results/accuracy-$name.json" -- "$@" | tail -n 1 | sed "s/^/$name: /"
}
run default
run original-recipe --mining random --ensemble 1 --preprocess none
run random-mining --mining random
run semi-hard --mining semi-hard
run single-head --ensemble 1
run no-preprocess --preprocess none
run early-stopping --validation-fraction 0.2 --steps 800
run fine-tune --fine-tune
