# The two commands of the README, each setting up what it needs on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up test lint sim bench-core

$(BIN)/synod: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/synod

up: $(BIN)/synod
	$(BIN)/synod up

test: $(BIN)/synod
	$(BIN)/ruff check synod tests bench
	$(BIN)/ruff format --check synod tests bench
	$(BIN)/mypy synod
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n 2 tests

sim: $(BIN)/synod
	$(BIN)/synod sim --seed 1 --runs 50 --nodes 3

bench-core: $(BIN)/synod
	$(BIN)/python bench/core.py
