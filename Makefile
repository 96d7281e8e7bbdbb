# Two commands from a fresh clone:  `make up`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test check lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## install, start a local master + 2 workers, render the Mandelbrot demo on them, then open the titan> REPL
up: $(STAMP)
	$(BIN)/titan up --demo

## install, then run the whole test suite (what CI runs)
test: $(STAMP)
	$(BIN)/python -m pytest -q

## lint and type checks
lint: $(STAMP)
	$(BIN)/ruff check protocol titan tests bench
	$(BIN)/ruff format --check protocol titan tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

## the machine's spawn ceiling, then every benchmark against its target (about 10 minutes)
bench: $(STAMP)
	$(BIN)/python -m bench.spawn_limit
	$(BIN)/python -m bench.report

## remove the venv, the caches, the demo's image and all runtime state in titan_workspace/ (WAL, jobs, logs)
clean:
	rm -rf $(VENV) mandelbrot.png .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find titan_workspace -mindepth 1 -maxdepth 1 ! -name .gitkeep -exec rm -rf {} +
