# `make test` and `make demo` each set up .venv and install the project on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint demo clean

$(STAMP): pyproject.toml
	@# the play-page test drives Debian's chromium; without it (no root, no apt) that one test skips
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) || echo "warning: chromium not installed, the browser test will skip"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev,procgen,atari]'
	@# the object-store pack test: s3fs, and moto's S3 server on this machine (no network in CI). A second step, with
	@# cffi held below 2 as procgen2's gym3 needs: resolved in the step above they sent pip backtracking to
	@# resolution-too-deep after 10 minutes
	$(BIN)/pip install 's3fs>=2024.6' 'moto[server]>=5' 'cffi<2'
	touch $(STAMP)

install: $(STAMP)

# the whole suite (362 tests; CI ran `.ci/run`, install included, in 23.8 minutes at stop 33; a fresh clone took 31 min of pytest beside a training run on the 2-core AMD EPYC; most of it is in the tests marked slow)
test: $(STAMP)
	$(BIN)/ruff format --check . && $(BIN)/ruff check .
	$(BIN)/python -m pytest tests -q

# the inner loop: everything but the tests marked slow (those that train models or compile training steps)
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -q -m "not slow"

# formatting and lint (ruff; rules in pyproject.toml); `ruff format . && ruff check --fix .` applies the fixes
lint: $(STAMP)
	$(BIN)/ruff format --check . && $(BIN)/ruff check .

demo: $(STAMP)
	bash scripts/demo.sh

clean:
	rm -rf $(VENV) runs
