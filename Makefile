# The one task runner: README, CI and developers all use these targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# uv comes from pip when the machine does not have it (a fresh box has only Python 3.11).
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
# This environment sets PYTHONDONTWRITEBYTECODE=1, which makes every process recompile its imports (~26 s for
# Airflow+Feast+MLflow+GX). Allow bytecode again, into one project-local cache outside the source tree.
unexport PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX := $(CURDIR)/.pycache
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export GX_ANALYTICS_ENABLED := False
export FEAST_USAGE := False
# XGBoost's OpenMP threads sleep instead of spinning while waiting: 80 rounds took 19.5 s vs 0.6 s on a busy 2-core box.
export OMP_WAIT_POLICY := PASSIVE
PYTEST_ARGS ?=

.PHONY: help setup demo test test-fast lint lint-imports deps format audit bench mlflow-ui docs docs-serve data-docs ui chromium up status down image clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(BIN)/.installed: pyproject.toml uv.lock hatch_build.py $(wildcard src/freqcap/adapters/*/*.c)
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv>=0.5"
	$(UV) sync --frozen --extra dev --extra all --extra stack --extra spark --python $(PYTHON)
	@touch $@

setup: $(BIN)/.installed  ## create .venv with every pinned dependency (uv)

demo: setup  ## simulate a small world, run the features, training and publish DAGs through Airflow, serve decisions
	$(BIN)/freqcap demo

test: setup chromium lint-imports docs  ## import contracts, the docs site (strict) and the whole test suite (needs Redis on 127.0.0.1:6379 under CI)
	$(BIN)/pytest --durations=25 $(PYTEST_ARGS)

test-fast: setup  ## unit tests only
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

lint: setup lint-imports  ## ruff lint and format check, and the import contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

lint-imports: setup  ## the layer contracts (pyproject.toml [tool.importlinter]): no upward imports, pure domain, no cycles
	$(BIN)/lint-imports

deps: setup  ## the package dependency graph from the code's imports: who imports whom, cycles, upward imports
	$(BIN)/python scripts/package_graph.py

# Every locked dependency (all extras, from uv.lock) checked by pip-audit against the PyPI advisory service (needs
# pypi.org's JSON API; AUDIT_ARGS="-s osv" for OSV). --strict: a package that could not be checked fails the audit
# rather than passing silently. Results and what was done about them: docs/operations/audit.md.
audit: setup  ## dependency vulnerability audit of uv.lock (pip-audit); fails on a finding or on a package it could not check
	$(UV) export --quiet --frozen --all-extras --format requirements-txt --no-emit-project --no-hashes -o $(VENV)/audit-requirements.txt
	$(BIN)/pip-audit --strict --disable-pip --no-deps --progress-spinner off -r $(VENV)/audit-requirements.txt $(AUDIT_ARGS)

format: setup  ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup  ## reproducible benchmarks; tables go to benchmarks/results/
	$(BIN)/python benchmarks/bench_simulate.py
	$(BIN)/python benchmarks/bench_validation.py
	$(BIN)/python benchmarks/bench_features.py
	$(BIN)/python benchmarks/bench_engines.py
	$(BIN)/python benchmarks/bench_curves.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_online_read.py
	$(BIN)/python benchmarks/bench_cluster.py
	$(BIN)/python benchmarks/bench_decide.py --reader all
	$(BIN)/python benchmarks/bench_http.py
	$(BIN)/python benchmarks/bench_serving_cpu.py
	$(BIN)/python benchmarks/bench_privacy.py
	$(BIN)/python benchmarks/bench_materialize.py
	$(BIN)/python benchmarks/bench_memory.py
	$(BIN)/python benchmarks/bench_install.py
	$(BIN)/python benchmarks/bench_stack.py
	$(BIN)/python benchmarks/bench_stream.py
	$(BIN)/python benchmarks/bench_evaluation.py --seeds 5 --workers 2
	$(BIN)/python benchmarks/bench_forget.py

mlflow-ui: setup  ## MLflow UI on 127.0.0.1:5000 over the demo's tracking DB
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/demo/data/mlflow/mlflow.db --host 127.0.0.1 --port 5000

# The monitoring workspace `freqcap monitor` / the monitoring DAG write (the demo's unless FREQCAP__DATA_DIR is set).
UI_WORKSPACE ?= $(if $(FREQCAP__DATA_DIR),$(FREQCAP__DATA_DIR),$(CURDIR)/demo/data)/monitoring/workspace

ui: setup  ## Evidently UI on 127.0.0.1:8001 over the monitoring workspace (dashboards of the hourly runs)
	$(BIN)/evidently ui --workspace "$(UI_WORKSPACE)" --host 127.0.0.1 --port 8001

chromium:  ## Debian's chromium for the on-call page's screenshot test (installed when missing; apt-get as root)
	@command -v chromium >/dev/null 2>&1 || (apt-get update && apt-get install -y chromium)

docs: setup  ## build the documentation site (mkdocs, strict: a broken link fails) into site/
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

docs-serve: setup  ## the documentation site live on http://127.0.0.1:8002
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8002

# Data Docs of the demo's gate runs unless FREQCAP__DATA_DIR names another data directory.
DOCS_DATA_DIR ?= $(if $(FREQCAP__DATA_DIR),$(FREQCAP__DATA_DIR),$(CURDIR)/demo/data)

data-docs: setup  ## build the Great Expectations Data Docs site of the gate runs, print its path, open it if there is a display
	$(BIN)/python -m freqcap.adapters.gx.docs --data-dir "$(DOCS_DATA_DIR)"

# The production-like stack (infra/production.yaml): Airflow 3 on Celery + PostgreSQL, MLflow server, Feast SQL
# registry + Redis, Evidently UI, serving, stream worker. Reuses the machine's PostgreSQL and Redis.
STACK := $(BIN)/freqcap --config infra/production.yaml stack

up: setup  ## start the production-like stack and wait until every component is healthy (URLs: make status)
	$(STACK) up

status: setup  ## each component of the stack: health, PID, URL
	$(STACK) status

down: setup  ## stop what `make up` started (and nothing else)
	$(STACK) down

# The container image of every component (infra/docker/Dockerfile: built from the wheel, versions from uv.lock).
# Needs a container engine (docker, or CONTAINER_ENGINE=podman); nothing else in this Makefile does.
CONTAINER_ENGINE ?= docker
IMAGE ?= freqcap:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

image:  ## build the container image (needs docker or podman; IMAGE=name:tag, CONTAINER_ENGINE=podman)
	$(CONTAINER_ENGINE) build -f infra/docker/Dockerfile -t $(IMAGE) .

clean:  ## remove generated data (not the venv)
	rm -rf data demo site dist .pycache .pytest_cache
