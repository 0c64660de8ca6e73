# The README's install, quick start and development commands, and what they share.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(BIN)/pairlie-train:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet "torch==2.13.0"   # PyPI's build (CUDA on Linux x86-64); a torch already in $(VENV) is kept
	$(BIN)/pip install --quiet -e ".[dev,sweep,export,docs]"

setup: $(BIN)/pairlie-train

demo: setup
	$(BIN)/pairlie-train

test: setup   # the slowest 25 tests are listed at the end, for keeping the suite short
	$(BIN)/python -m pytest -q --durations=25

test-fast: setup   # the edit-run loop: skips the minutes-long real-data tests
	$(BIN)/python -m pytest -q -m "not slow"

docs: setup   # the documentation site in site/ (mkdocs serve: live while editing)
	$(BIN)/mkdocs build --strict

lint: setup
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

.PHONY: setup demo test test-fast docs lint
