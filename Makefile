# Sonolake: two commands on a fresh clone — `make demo` and `make test`.
SHELL := /bin/bash
PY_VERSION := 3.11
UV_VERSION := 0.13.8
VENV := .venv
PY := $(VENV)/bin/python
# uv is run as a module of the system Python, so it is found wherever pip put it.
UV := python3 -m uv
export UV_PYTHON_DOWNLOADS := never
PYTEST_ARGS ?=
# `make test` runs on this many pytest-xdist workers, a whole test file to each (module fixtures
# such as a trained bundle or a started server are built once). Two fit CI's two cores: most
# tests wait on servers and subprocesses they start. PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2

.PHONY: help venv test test-slow test-fast test-dask test-profile dask-cluster demo bench bench-quick dev lint fmt browser ops-tools chaos clean

help:
	@echo "make demo         the whole loop end to end on the embedded defaults"
	@echo "make venv         create .venv from uv.lock (then: source .venv/bin/activate)"
	@echo "make test         create .venv from uv.lock if needed, then run the suite"
	@echo "make test-slow    the longest end-to-end runs (UI, train→serve, retraining, S3)"
	@echo "make chaos        the long chaos suite: kill -9, full disk, S3 outages, fuzzing"
	@echo "make bench        every benchmark at full size (JSON in bench-results/)"
	@echo "make bench-quick  every benchmark, quick sizes"
	@echo "make dev          Dagster UI and daemon (dg dev when dagster-dg-cli is installed)"
	@echo "make lint         ruff + mypy + import contracts (lint-imports)"
	@echo "make test-dask    the tests that start a real Dask cluster (minutes; not in make test)"
	@echo "make dask-cluster a local Dask scheduler + 2 workers for --runner dask (Ctrl-C stops)"

# The environment comes from the lock file only (--frozen): what CI installs is what was locked.
$(VENV)/.synced: uv.lock pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen --python $(PY_VERSION)
	@touch $@

venv: $(VENV)/.synced

# Headless Chromium for the browser-page test (Debian's package; Playwright drives it).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null; }

# promtool (alert-rule checks) and the PostgreSQL server (the postgres profile's test), from
# Debian's packages; the tests start their own servers, nothing runs as a service.
ops-tools:
	@command -v promtool >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus (promtool) and postgresql for the ops tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus postgresql) >/dev/null; }

test: venv browser ops-tools
	$(PY) -m pytest -m "not slow and not dask and not profile" -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The longest end-to-end runs (the Dagster UI in Chromium, train → promote → serve from the
# shell, drift-triggered retraining, the graph on an S3 lake): minutes each, so not in CI's
# budget; run them before a release and after changing those paths.
test-slow: venv browser
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

# The postgres profile end to end (a real retrain and promotion on Postgres and S3, ~2-4 min);
# `make test` runs its short version (storage and registry on Postgres) only.
test-profile: venv ops-tools
	$(PY) -m pytest -m profile $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -m "not slow and not browser and not dask" $(PYTEST_ARGS)

# Real scheduler and worker processes on loopback (tests/dask_cluster.py); each worker
# imports Beam and loads the VAD once, and the Dagster case trains a quick model: ~2.5 min
# on a quiet 2-core machine, more on a busy one.
test-dask: venv
	$(PY) -m pytest -m dask $(PYTEST_ARGS)

# A local cluster for `sonolake sidecar --runner dask --dask-scheduler tcp://127.0.0.1:8786`
# and SONOLAKE_DAGSTER_EXECUTOR=dask. Workers import this checkout (PYTHONPATH); the
# scheduler stops with the workers (Ctrl-C).
DASK_PORT ?= 8786
DASK_WORKERS ?= 2
dask-cluster: venv
	@export PYTHONPATH=$(CURDIR); \
	$(VENV)/bin/dask scheduler --host 127.0.0.1 --port $(DASK_PORT) --no-dashboard & scheduler=$$!; \
	trap 'kill $$scheduler' EXIT; \
	$(VENV)/bin/dask worker tcp://127.0.0.1:$(DASK_PORT) --nworkers $(DASK_WORKERS) --nthreads 1 \
	  --no-dashboard

# The long chaos runs (marker `chaos`); `make test` runs their short variants. -s shows the
# counts each case prints (kills survived, chunks acked, lost, duplicates).
chaos: venv
	$(PY) -m pytest tests/chaos tests/streaming -m chaos -s $(PYTEST_ARGS)

demo: venv
	$(PY) -m sonolake demo

bench: venv
	$(PY) -m benchmarks all --json bench-results

bench-quick: venv
	$(PY) -m benchmarks all --quick --json bench-results

# Dagster UI + daemon, SQLite storage under the state dir (dagster.yaml written by
# orchestration/instance.py: freshness policies on, one writer per table). `dg dev` (the
# project layout in pyproject.toml's [tool.dg]) when dagster-dg-cli is in the environment,
# otherwise `dagster dev` over workspace.yaml, the same code location. Either way the dbt
# manifest is re-parsed at load (DbtProject.prepare_if_dev) with this environment's dbt.
dev: venv
	DAGSTER_HOME=$$($(PY) -m sonolake dagster-home) PATH="$(CURDIR)/$(VENV)/bin:$$PATH" \
	  $$(if [ -x $(VENV)/bin/dg ]; then echo "$(VENV)/bin/dg dev"; \
	     else echo "$(VENV)/bin/dagster dev -w workspace.yaml"; fi)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

fmt: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf .sonolake lakehouse bench-results dbt/target dbt/logs
