# One-command entry points (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARTIFACTS ?= artifacts

.PHONY: setup test lint demo evaluate bench-accuracy clean

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

PORT ?= 50051

# The main job on the embedded defaults: train on the bundled sample set, index the
# sample reference texts, and serve them on 127.0.0.1 until Ctrl-C.
demo: setup
	$(VENV)/bin/siamese-train --data data/commit-messages/train.csv --label-column class \
		--out $(ARTIFACTS)/model --overwrite
	$(VENV)/bin/siamese-index build --model $(ARTIFACTS)/model \
		--data data/commit-messages/test.csv --label-column class --out $(ARTIFACTS)/index
	@echo
	@echo "Serving on 127.0.0.1:$(PORT). From another terminal, try:"
	@echo "  $(VENV)/bin/siamese-query --target 127.0.0.1:$(PORT) \"Fix NPE when the session expires\" --predict"
	@echo
	$(VENV)/bin/siamese-serve --index $(ARTIFACTS)/index --host 127.0.0.1 --port $(PORT)

# Accuracy of the trained model on the bundled test split, with plots.
evaluate: setup
	$(VENV)/bin/siamese-evaluate --model $(ARTIFACTS)/model \
		--reference data/commit-messages/train.csv --test data/commit-messages/test.csv \
		--label-column class --report-json $(ARTIFACTS)/evaluation/report.json

bench-accuracy: setup
	$(PY) bench/accuracy.py --out bench/results/accuracy.json

clean:
	rm -rf $(ARTIFACTS) evaluation
