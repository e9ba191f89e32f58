# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup setup-system run test lint fmt services bench lock openapi clean

setup: $(STAMP) src/outreach/static/.assets

$(STAMP): requirements-dev.lock requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Third-party browser assets from hash-pinned wheels (scripts/fetch_assets.py).
src/outreach/static/.assets: requirements-assets.lock scripts/fetch_assets.py | $(STAMP)
	$(BIN)/python scripts/fetch_assets.py
	touch $@

# System tools some tests use (promtool, Chromium); needs root and apt. Best effort.
setup-system:
	@bash scripts/setup-system.sh

run: setup
	$(BIN)/outreach migrate
	$(BIN)/outreach serve

lint: setup
	$(BIN)/ruff format --check src tests scripts bench
	$(BIN)/ruff check src tests scripts bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

fmt: setup
	$(BIN)/ruff format src tests scripts bench
	$(BIN)/ruff check --fix src tests scripts bench

# The real PostgreSQL and Redis the tests use (started here if stopped; CI fails without them).
services:
	@bash scripts/services.sh

test: setup lint services
	-@bash scripts/setup-system.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup services
	$(BIN)/python -m bench.run

openapi: setup
	$(BIN)/outreach openapi

# Re-pin dependencies (needs uv: `pip install uv`). Hashes only, no download addresses.
lock:
	uv pip compile --python-version 3.11 --generate-hashes --no-header requirements.in -o requirements.lock
	uv pip compile --python-version 3.11 --generate-hashes --no-header requirements-dev.in requirements.in -o requirements-dev.lock
	uv pip compile --python-version 3.11 --generate-hashes --no-header --no-deps requirements-assets.in -o requirements-assets.lock

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache src/outreach/static/scalar.standalone.js src/outreach/static/altcha.min.js src/outreach/static/.assets
