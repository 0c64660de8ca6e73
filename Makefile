# The README's install, quick start and development commands, and what they share.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(BIN)/pairlie-train: pyproject.toml   # again when the dependencies change
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet "torch==2.13.0"   # PyPI's build (CUDA on Linux x86-64); a torch already in $(VENV) is kept
	$(BIN)/pip install --quiet -e ".[dev,sweep,export,docs]"
	touch $@

setup: $(BIN)/pairlie-train

demo: setup
	$(BIN)/pairlie-train

# one pytest-xdist worker per core (at most 4), each with its share of the cores' threads (tests/conftest.py);
# --dist loadgroup keeps the tests that share one exact fp32 pass of the test sets in one worker
XDIST := -n auto --maxprocesses 4 --dist loadgroup

test: setup   # the slowest 25 tests are listed at the end, for keeping the suite short
	$(BIN)/python -m pytest -q $(XDIST) --durations=25

test-fast: setup   # the edit-run loop: skips the minutes-long real-data tests
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow"

docs: setup   # the documentation site in site/ (mkdocs serve: live while editing)
	$(BIN)/mkdocs build --strict

lint: setup
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

.PHONY: setup demo test test-fast docs lint
