# One-command entry points (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
ARTIFACTS ?= artifacts
PORT ?= 50051
HTTP_PORT ?= 8080
SAMPLE := data/commit-messages

.PHONY: setup test test-all lint demo serve evaluate bench-accuracy clean

setup: $(VENV)/.installed

# the installer prints each package as it goes: TensorFlow and friends are ~2.5 GB, a few
# minutes on a fresh machine (README.md, "Quick start").
$(VENV)/.installed: pyproject.toml
	@echo "== installing siamese-search and its dependencies into $(VENV) (~3 GB of disk, a few minutes)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip --progress-bar on
	@# uv installs the same resolution as pip, downloading in parallel: 15 s here from a
	@# cold uv cache, where pip took ~110 s with a warm one. pip does it if uv cannot.
	( $(PY) -m pip install --progress-bar on uv && \
	  $(BIN)/uv pip install --python $(PY) -e ".[dev]" ) || \
	$(PY) -m pip install --progress-bar on -e ".[dev]"
	@# the web console's browser tests drive Debian's Chromium (Playwright's own browser
	@# download needs the internet); where apt cannot install it they are skipped, loudly
	@command -v chromium >/dev/null 2>&1 || \
	  (echo "== installing chromium (apt) for the web console's browser tests" && \
	   (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    (apt-get update -q >/dev/null 2>&1 && \
	     DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1))) || \
	  echo "!!! chromium could not be installed: the web console's browser tests will be SKIPPED"
	touch $@

# import-linter and mypy read packages from disk, and the installed namespace maps
# folders (trainer/ -> siamese_search.trainer, ...): both run on a copy laid out as
# installed, under build/lint-view (paths in their messages are relative to it).
LINT_VIEW := build/lint-view

lint: setup
	$(BIN)/ruff check .
	rm -rf $(LINT_VIEW) && mkdir -p $(LINT_VIEW)
	cp -r siamese_search $(LINT_VIEW)/
	for part in trainer indexer server; do cp -r $$part $(LINT_VIEW)/siamese_search/$$part; done
	cd $(LINT_VIEW) && PYTHONPATH=. $(CURDIR)/$(BIN)/lint-imports $(CURDIR)/pyproject.toml --cache-dir $(CURDIR)/build/import-linter-cache
	cd $(LINT_VIEW) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml --cache-dir $(CURDIR)/build/mypy-cache

# The fast loop: everything but the tests marked `slow`.
test: setup lint
	$(PY) -m pytest -m "not slow"

# Everything, slow tests included: what CI runs.
test-all: setup lint
	$(PY) -m pytest

# The main job on the embedded defaults: train on the bundled sample set, index the
# sample reference texts, and serve them on 127.0.0.1 until Ctrl-C. The model and the
# index are rebuilt only when their inputs changed (make's timestamps).
demo: serve

$(ARTIFACTS)/model/manifest.json: $(SAMPLE)/train.csv $(VENV)/.installed
	$(BIN)/siamese-train --data $(SAMPLE)/train.csv --label-column class \
		--out $(ARTIFACTS)/model --overwrite

$(ARTIFACTS)/index/CURRENT: $(ARTIFACTS)/model/manifest.json $(SAMPLE)/test.csv
	$(BIN)/siamese-index build --model $(ARTIFACTS)/model \
		--data $(SAMPLE)/test.csv --label-column class --out $(ARTIFACTS)/index --replace

# Serve the (up-to-date) sample model and index, with REST and the web console.
serve: $(ARTIFACTS)/index/CURRENT
	@echo
	@echo "Serving gRPC on 127.0.0.1:$(PORT), REST on 127.0.0.1:$(HTTP_PORT)."
	@echo "  Web console: http://127.0.0.1:$(HTTP_PORT)/console"
	@echo "  From another terminal: $(BIN)/siamese-query --target 127.0.0.1:$(PORT) \"Fix NPE when the session expires\" --predict"
	@echo
	$(BIN)/siamese-serve --index $(ARTIFACTS)/index --host 127.0.0.1 --port $(PORT) \
		--http-port $(HTTP_PORT)

# Accuracy of the trained model on the bundled test split, with plots.
evaluate: $(ARTIFACTS)/model/manifest.json
	$(BIN)/siamese-evaluate --model $(ARTIFACTS)/model \
		--reference $(SAMPLE)/train.csv --test $(SAMPLE)/test.csv \
		--label-column class --report-json $(ARTIFACTS)/evaluation/report.json

bench-accuracy: setup
	$(PY) bench/accuracy.py --out bench/results/accuracy.json

clean:
	rm -rf $(ARTIFACTS) evaluation build
