# warnd — `make run` and `make test` work on a fresh machine with Python 3.11+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config/demo.toml

.DEFAULT_GOAL := help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "warnd needs Python 3.11 or newer; set PYTHON=python3.x")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	@touch $@ $(VENV)/.installed-run

install: $(VENV)/.installed-run  ## create .venv and install warnd

dev: $(VENV)/.installed-dev  ## install warnd with test and lint tools

run: $(VENV)/.installed-run  ## start warnd on the demo config with its embedded Redis
	$(BIN)/warnd check --config $(CONFIG)
	$(BIN)/warnd serve --config $(CONFIG)

test: $(VENV)/.installed-dev  ## run the whole test suite
	$(BIN)/python -m pytest -p no:cacheprovider

lint: $(VENV)/.installed-dev  ## ruff and mypy (strict)
	$(BIN)/ruff check warnd channels tests
	$(BIN)/ruff format --check warnd channels tests
	$(BIN)/mypy

format: $(VENV)/.installed-dev  ## apply ruff's formatting and import order
	$(BIN)/ruff check --fix warnd channels tests
	$(BIN)/ruff format warnd channels tests

clean:  ## remove the virtualenv, build output and the demo data directory
	rm -rf $(VENV) build dist *.egg-info var

.PHONY: help install dev run test lint format clean
