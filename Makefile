# One-command entry points. Everything installs into ./.venv from this project's files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test docs lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,control,gym,ray,docs]'
	touch $(STAMP)

demo: $(STAMP)  ## set up and learn the default problem, writing ./azopg-run/
	OMP_NUM_THREADS=1 $(BIN)/azopg train --out azopg-run

test: $(STAMP)  ## set up and run the whole test suite (lint and type check included)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/python -c "import ray, control, gymnasium"  # the extras' tests must run, not skip
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest
	$(MAKE) docs

docs: $(STAMP)  ## build the documentation site into ./site/ (MkDocs, warnings are errors)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: $(STAMP)  ## rollout throughput and accuracy table
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/rollouts.py

clean:
	rm -rf $(VENV) azopg-run .pytest_cache site
