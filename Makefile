# Feature platform. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ENV ?= local
UV_VERSION := 0.13.9
VENV := .venv
BIN := $(VENV)/bin
PLATFORM := $(BIN)/feature-platform

# The local services (make services) use trust auth and no Redis password. Values set in
# the environment, such as CI secrets, win; the config guard still checks the rest.
export POSTGRES_PASSWORD ?=
export REDIS_PASSWORD ?=

.PHONY: help install services demo test test-unit test-integration lint format typecheck \
        check-config generate apply materialize clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  make %-18s %s\n", $$1, $$2}'
	@echo "  ENV=local|dev|prod selects the environment (default: local)"

$(VENV)/.installed: pyproject.toml uv.lock
	@command -v uv >/dev/null || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	uv sync --frozen
	@touch $@

install: $(VENV)/.installed ## Install the locked dependencies into .venv

services: ## Start local PostgreSQL and Redis if they are not running
	@bash ci/start-services.sh

demo: install ## Generate data, apply, materialize, serve and query: end to end (ENV=local)
	@if [ "$(ENV)" != "local" ]; then bash ci/start-services.sh; fi
	$(PLATFORM) demo $(ENV)

test: install services ## Run the whole test suite against real PostgreSQL and Redis
	$(BIN)/pytest

test-unit: install ## Run the tests that need no services
	$(BIN)/pytest tests/unit

test-integration: install services ## Run the tests against PostgreSQL and Redis
	$(BIN)/pytest tests/integration

lint: install ## ruff check, ruff format --check, mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install ## Format the code in place
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install ## mypy
	$(BIN)/mypy

check-config: install ## Check that ENV's configuration has every variable it needs
	$(PLATFORM) check-config $(ENV)

generate: install ## Write the generated data set to ENV's offline store
	$(PLATFORM) generate $(ENV)

apply: install ## feast apply for ENV
	$(PLATFORM) feast $(ENV) -- apply

materialize: install ## materialize-incremental up to now for ENV
	$(PLATFORM) materialize $(ENV)

clean: ## Remove the local data directory and caches
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache
