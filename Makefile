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

.PHONY: help runtime install services test-tools demo test test-unit test-integration lint format \
        typecheck check-config generate materialize clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  make %-18s %s\n", $$1, $$2}'
	@echo "  ENV=local|dev|prod selects the environment (default: local)"

# Bytecode is compiled once here: every process (servers, commands, tests) starts from it.
# The runtime alone for make demo; with the dev groups (tests, lint, charts, load, docs)
# for everything else.
$(VENV)/.runtime: pyproject.toml uv.lock
	@command -v uv >/dev/null || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	uv sync --frozen --no-default-groups --inexact
	$(BIN)/python -m feature_platform.devtools.bytecode
	@touch $@

$(VENV)/.installed: pyproject.toml uv.lock
	@command -v uv >/dev/null || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	uv sync --frozen
	$(BIN)/python -m feature_platform.devtools.bytecode
	@touch $@ $(VENV)/.runtime

runtime: $(VENV)/.runtime ## Install the locked runtime dependencies only into .venv
install: $(VENV)/.installed ## Install the locked dependencies and dev tools into .venv

services: ## Start local PostgreSQL and Redis if they are not running
	@bash ci/start-services.sh

demo: runtime ## Generate data, apply, materialize, serve, query, check skew: end to end (ENV=local)
	@if [ "$(ENV)" != "local" ]; then bash ci/start-services.sh; fi
	$(PLATFORM) demo $(ENV)

test: install services test-tools ## Run the whole test suite against real PostgreSQL and Redis
	$(BIN)/pytest

test-unit: install ## Run the tests that need no services
	$(BIN)/pytest tests/unit

test-integration: install services ## Run the tests against PostgreSQL and Redis
	$(BIN)/pytest tests/integration

lint: install ## ruff check, ruff format --check, mypy, the import contracts (lint-imports)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install ## Format the code in place, then apply ruff's safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install ## mypy
	$(BIN)/mypy
	$(BIN)/lint-imports

check-config: install ## Check that ENV's configuration has every variable it needs
	$(PLATFORM) check-config $(ENV)

generate: install ## Write the generated data set to ENV's offline store
	$(PLATFORM) generate $(ENV)

materialize: install ## Load the rows created since the last run into ENV's online store
	$(PLATFORM) materialize $(ENV)

clean: ## Remove the local data directory and caches
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache

# --- Feast upgrades: every seam between the platform and Feast, tried on another release --
.PHONY: feast-candidate

FEAST_VERSION ?=
feast-candidate: ## The Feast seam tests against FEAST_VERSION=x.y.z in .venv-feast-x.y.z: kept/broken per seam
	@if [ -z "$(FEAST_VERSION)" ]; then echo "usage: make feast-candidate FEAST_VERSION=x.y.z"; exit 2; fi
	bash ci/feast-candidate.sh $(FEAST_VERSION)

# --- rollouts: the same entry points CI uses (ci/plan.sh, ci/apply.sh) -------------------
.PHONY: plan apply rollout-log

# make ends with 2 whenever a recipe fails, so the recipe names ci/plan.sh's own code.
plan: install ## Plan the feature repository for ENV: summary; ci/plan.sh exits 3 if breaking
	@bash ci/plan.sh $(ENV) || { code=$$?; \
	  echo "ci/plan.sh exited $$code (3: breaking change, 2: configuration error, 1: plan failed);" \
	       "make itself exits 2 on any failure: CI calls ci/plan.sh for the code" >&2; exit $$code; }

apply: install ## Apply to ENV under its lock (breaking needs ALLOW_BREAKING_CHANGES=true)
	bash ci/apply.sh $(ENV)

rollout-log: install ## The latest applies recorded in ENV's registry database
	$(PLATFORM) rollout-log $(ENV)

# --- deploy: the image, the chart, a kind cluster ----------------------------------------
.PHONY: chart-test image-lint kind-up kind-test kind-down

KIND_CLUSTER := feast-platform
KIND_IMAGE := feature-platform:kind
KUBE_NAMESPACE := feast-dev

chart-test: install services ## Render, lint, validate and police the chart; run its commands locally
	$(BIN)/pytest tests/chart

# The Debian tools the tests run, as command:package. pg_dump reads a restored registry
# database back, independently of the platform's own backup code. npm installs the
# validators of KEDA's CRD schemas (package-lock.json) that the chart tests run.
TEST_TOOLS := promtool:prometheus prometheus-pushgateway:prometheus-pushgateway chromium:chromium \
              pg_dump:postgresql-client npm:npm
KEDA_SCHEMAS := tests/chart/keda

test-tools: ## Install the tools the tests run (promtool, prometheus-pushgateway, chromium, pg_dump, KEDA's schemas) if missing
	@missing=""; for tool in $(TEST_TOOLS); do \
	  command -v $${tool%%:*} >/dev/null || missing="$$missing $${tool#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@if [ -n "$(filter npm:npm,$(TEST_TOOLS))" ] && \
	  [ ! $(KEDA_SCHEMAS)/node_modules/.package-lock.json -nt $(KEDA_SCHEMAS)/package-lock.json ]; then \
	  npm ci --prefix $(KEDA_SCHEMAS) --no-audit --no-fund --loglevel=error; fi

image-lint: install ## hadolint over the Dockerfile
	$(BIN)/hadolint Dockerfile

kind-up: ## Build the image, create the kind cluster, install the chart with dev values
	docker build -t $(KIND_IMAGE) .
	kind get clusters | grep -qx $(KIND_CLUSTER) || \
	  kind create cluster --name $(KIND_CLUSTER) --config k8s/kind-cluster.yaml --wait 180s
	kind load docker-image $(KIND_IMAGE) --name $(KIND_CLUSTER)
	kubectl --context kind-$(KIND_CLUSTER) apply -f k8s/namespaces.yaml
	helm --kube-context kind-$(KIND_CLUSTER) -n $(KUBE_NAMESPACE) upgrade --install fp \
	  helm/feast-platform -f helm/feast-platform/values-dev.yaml --set image.tag=kind

kind-test: install ## The kind tier: build, install, load, apply, materialize, drive over HTTP
	$(BIN)/pytest tests/kind --kind --keep-cluster

kind-down: ## Delete the kind cluster
	kind delete cluster --name $(KIND_CLUSTER)

# --- serving: the feature server, its load test and benchmark ------------------------------
.PHONY: serve bench bench-materialize bench-saturation loadtest

serve: install ## Run the feature server in the foreground for ENV (FEATURE_SERVER_* settings)
	@if [ "$(ENV)" != "local" ]; then bash ci/start-services.sh; fi
	$(PLATFORM) serve $(ENV)

# Options of the server benchmark: --rounds N (default 3), --seconds S per wrk run.
BENCH_ARGS ?=
# Options of the materialization benchmark: --rows N (default 1,000,000), --rounds N, --quick.
BENCH_MATERIALIZE_ARGS ?=
# Options of the quality benchmark: --rows N (default 1,000,000), --rounds N.
BENCH_QUALITY_ARGS ?=
# Options of the overload benchmark: --rounds N (default 5), --step-seconds S, --bound N.
BENCH_SATURATION_ARGS ?=
# Options of the thin-client training-set benchmark: --rounds N (default 3), --quick.
BENCH_THIN_CLIENT_ARGS ?=
# Options of the Ray per-task benchmark: --rounds N (default 3), --quick.
BENCH_RAY_ARGS ?=
# Options of the refresh benchmark: --rounds N (default 3), --seconds S, --interval S, --extra-views N.
BENCH_REFRESH_ARGS ?=
bench: install services ## Benchmark the server (stock feast serve, no-ops, raw Redis, overload, registry refreshes), training sets (command, thin client, Ray per task), materialization, quality
	@$(MAKE) --no-print-directory test-tools TEST_TOOLS=wrk:wrk
	$(BIN)/python loadtests/bench.py $(BENCH_ARGS)
	$(BIN)/python loadtests/bench_saturation.py $(BENCH_SATURATION_ARGS)
	$(BIN)/python loadtests/bench_refresh.py $(BENCH_REFRESH_ARGS)
	$(BIN)/python loadtests/bench_training.py
	$(BIN)/python loadtests/bench_thin_client.py $(BENCH_THIN_CLIENT_ARGS)
	$(BIN)/python loadtests/bench_ray.py $(BENCH_RAY_ARGS)
	$(BIN)/python loadtests/bench_materialize.py $(BENCH_MATERIALIZE_ARGS)
	$(BIN)/python loadtests/bench_served_vectors.py $(BENCH_SERVED_VECTORS_ARGS)
	$(BIN)/python loadtests/bench_quality.py $(BENCH_QUALITY_ARGS)

bench-materialize: install services ## Materialization against raw redis-py writes (BENCH_MATERIALIZE_ARGS=--quick)
	$(BIN)/python loadtests/bench_materialize.py $(BENCH_MATERIALIZE_ARGS)

bench-saturation: install services ## Open-loop overload at twice capacity, the bound on requests in flight off and on
	@$(MAKE) --no-print-directory test-tools TEST_TOOLS=wrk:wrk
	$(BIN)/python loadtests/bench_saturation.py $(BENCH_SATURATION_ARGS)

LOAD_HOST ?= http://127.0.0.1:6566
loadtest: install ## locust against LOAD_HOST, headless; thresholds set the exit code
	mkdir -p loadtests/results
	$(BIN)/locust -f loadtests/locustfile.py --headless -H $(LOAD_HOST) -u 20 -r 20 -t 30s \
	  --csv loadtests/results/locust --html loadtests/results/locust.html

# --- docs: the documentation site (mkdocs.yml, docs/), built into site/ -------------------
.PHONY: docs

# Graphviz renders docs/diagrams/*.dot to the SVGs the pages show (committed, and rendered
# again on every build). --strict turns every warning into a failure: a broken link or
# anchor, a page left out of the navigation. Material's end-of-life notice (May 2027) is
# silenced with NO_MKDOCS_2_WARNING.
docs: install ## Render the diagrams and build the documentation into site/ (strict)
	@$(MAKE) --no-print-directory test-tools TEST_TOOLS=dot:graphviz
	@for source in docs/diagrams/*.dot; do \
	  echo "dot -Tsvg $$source -o $${source%.dot}.svg"; \
	  dot -Tsvg "$$source" -o "$${source%.dot}.svg" || exit 1; \
	done
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
