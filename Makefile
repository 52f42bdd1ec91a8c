# One virtual environment with everything; torch is pinned to the CPU build first so that nothing
# pulls a multi-GB CUDA wheel.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0

.PHONY: install test lint demo simulate quality bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev,pretrained,coordinator,agent]'
	touch $@

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The main job: a coordinator and six agent processes talking HTTP on this machine, a table per round,
# the server-only baseline, runs/demo/summary.json. 4-9 minutes on 2 CPU cores.
demo: install
	$(BIN)/creamfl-coordinator demo --run-dir runs/demo

# The same federation in one process (the library's simulator).
simulate: install
	$(BIN)/creamfl simulate --preset demo --json runs/simulate.json

quality: install
	$(BIN)/python bench/quality.py --json runs/quality.json

bench: install
	$(BIN)/python bench/ensemble_bench.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
