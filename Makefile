# One-word entry points. `make test` is what CI runs (see .ci/run).
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

.PHONY: install demo ui test lint bench db-init

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,sandbox]'
	touch $@

demo: install
	$(BIN)/recon-pipeline demo

ui: install
	$(BIN)/recon-pipeline sandbox --ui

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check recon_pipeline recon_pipeline_tests benchmarks
	$(BIN)/ruff format --check recon_pipeline recon_pipeline_tests benchmarks

bench: install
	$(BIN)/python benchmarks/bench_drift.py
	$(BIN)/python benchmarks/bench_stripe.py
	$(BIN)/python benchmarks/bench_discord.py
	$(BIN)/python benchmarks/bench_pipeline.py --sizes 10000 100000

db-init: install
	$(BIN)/recon-pipeline db init
