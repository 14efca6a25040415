# warnd — `make run` and `make test` work on a fresh machine with Python 3.11+.
PYTHON ?= python3
VENV   := .venv
# arq (a `make bench` peer) pins redis-py below 6, warnd uses a newer one: its own venv
ARQ_VENV := .venv-arq
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
	$(BIN)/python -m pip install --quiet -e '.[test,lint,bench]'
	@touch $@ $(VENV)/.installed-run

install: $(VENV)/.installed-run  ## create .venv and install warnd

dev: $(VENV)/.installed-dev  ## install warnd with test and lint tools

run: $(VENV)/.installed-run  ## start warnd on the demo config with its embedded Redis
	$(BIN)/warnd check --config $(CONFIG)
	$(BIN)/warnd serve --config $(CONFIG)

test: $(VENV)/.installed-dev $(ARQ_VENV)/.installed peers  ## run the whole test suite
	$(BIN)/python -m pytest -p no:cacheprovider

# The channel tests talk to real gateways: Kannel (bearerbox, smsbox and the
# fakesmsc SMSC from kannel-extras) and mosquitto. Install the Debian packages
# when a binary is missing and we are root or have sudo; otherwise say so (in
# CI the tests then fail with the same message instead of skipping).
PEER_BINARIES := /usr/sbin/bearerbox /usr/sbin/smsbox /usr/lib/kannel/test/fakesmsc /usr/sbin/mosquitto
# The console's browser test drives Debian's chromium through Playwright
# (executable_path, no browser download); a CJK font makes its screenshots legible.
BROWSER_BINARY := /usr/bin/chromium
BROWSER_PACKAGES := chromium fonts-wqy-microhei
peers:  ## install the Debian packages the channel tests need (kannel, kannel-extras, mosquitto) and chromium
	@missing=""; for b in $(PEER_BINARIES); do [ -x "$$b" ] || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo; \
	  else echo "missing:$$missing; run: apt-get install -y kannel kannel-extras mosquitto"; exit 0; fi; \
	  echo "installing kannel kannel-extras mosquitto (missing:$$missing)"; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kannel kannel-extras mosquitto >/dev/null; \
	  for svc in kannel mosquitto; do $$SUDO service $$svc stop >/dev/null 2>&1 || true; done; \
	fi
	@if [ ! -x $(BROWSER_BINARY) ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo; \
	  else echo "missing: $(BROWSER_BINARY); run: apt-get install -y $(BROWSER_PACKAGES)"; exit 0; fi; \
	  echo "installing $(BROWSER_PACKAGES) (missing: $(BROWSER_BINARY))"; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES) >/dev/null; \
	fi

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	@touch $@ $(VENV)/.installed-run

$(ARQ_VENV)/.installed: bench/arq-requirements.txt
	$(PYTHON) -m venv $(ARQ_VENV)
	$(ARQ_VENV)/bin/python -m pip install --quiet -r bench/arq-requirements.txt
	@touch $@

bench: $(VENV)/.installed-bench $(ARQ_VENV)/.installed  ## every benchmark, peers included (BENCH_ARGS=--quick: a few minutes)
	WARND_BENCH_VIA_MAKE=1 $(BIN)/python bench/run.py $(BENCH_ARGS)

lint: $(VENV)/.installed-dev  ## ruff and mypy (strict)
	$(BIN)/ruff check warnd channels tests bench
	$(BIN)/ruff format --check warnd channels tests bench
	$(BIN)/mypy

format: $(VENV)/.installed-dev  ## apply ruff's formatting and import order
	$(BIN)/ruff check --fix warnd channels tests bench
	$(BIN)/ruff format warnd channels tests bench

clean:  ## remove the virtualenv, build output and the demo data directory
	rm -rf $(VENV) $(ARQ_VENV) build dist *.egg-info var

.PHONY: help install dev run test lint format clean peers bench
