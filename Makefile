# One-command entry points (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARTIFACTS ?= artifacts

.PHONY: setup test lint demo bench-accuracy clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(PY) -m pytest

# The main job on the embedded defaults: train on the bundled sample set, then evaluate.
demo: setup
	$(VENV)/bin/siamese-train --data data/commit-messages/train.csv --label-column class \
		--out $(ARTIFACTS)/model --overwrite
	$(VENV)/bin/siamese-evaluate --model $(ARTIFACTS)/model \
		--reference data/commit-messages/train.csv --test data/commit-messages/test.csv \
		--label-column class --report-json $(ARTIFACTS)/evaluation/report.json

bench-accuracy: setup
	$(PY) bench/accuracy.py --out bench/results/accuracy.json

clean:
	rm -rf $(ARTIFACTS) evaluation
