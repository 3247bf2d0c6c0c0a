# llmops — two commands on a fresh machine: `make demo` and `make test`.
# Every target creates .venv when missing and installs the pinned requirements.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
LLMOPS_HOME ?= $(CURDIR)/.llmops
# Installed separately with --no-deps: its own metadata pins an old numpy/grpc that
# would fight requirements.txt; we only need the tritonserver binary it carries.
PYTRITON_VERSION := 0.7.0
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-12)

export LLMOPS_HOME
export AIRFLOW_HOME := $(LLMOPS_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
# Embedded stack: DAGs start unpaused so a trigger from the UI runs at once.
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export PYTHONPATH := $(CURDIR)/plugins:$(CURDIR)/dags

.PHONY: venv browser demo lint test test-fast bench airflow stop mlflow clean help

help:
	@echo "make demo    - set up, start the embedded stack and follow the whole Asset chain through the"
	@echo "               scheduler: llmops_data -> llmops_train -> llmops_evaluate -> llmops_deploy; then"
	@echo "               users, the monitor, a new site section, drift -> llmops_retrain -> v2 deployed"
	@echo "make lint    - ruff (the whole repository) and mypy (llmops/, plugins/), as set in pyproject.toml"
	@echo "make test    - set up, lint, and run the whole test suite (slow end-to-end tests included)"
	@echo "make browser - Debian's chromium for the UI tests (Playwright drives it; skipped when installed)"
	@echo "make test-fast - lint, then the tests not marked slow"
	@echo "make bench   - throughput, quality and overhead of every stage; a retraining's cost vs a full lifecycle"
	@echo "make airflow - start the embedded stack in the background: Airflow (UI and REST API on"
	@echo "               http://127.0.0.1:8080), Triton, the MLflow UI, the demo site (llmops stack start)"
	@echo "make stop    - stop the stack; running tasks get 60 s, then resume at the next start (llmops stack stop)"
	@echo "make mlflow  - only the MLflow UI on the embedded store (http://127.0.0.1:5000; the stack runs it too)"
	@echo "make clean   - remove \$$LLMOPS_HOME (artifacts, Airflow DB); keeps .venv"

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --progress-bar off -r requirements.txt
	$(PIP) install --progress-bar off --no-deps nvidia-pytriton==$(PYTRITON_VERSION)
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

# The UI tests drive Debian's chromium with Playwright (its own browser download is never
# used: no internet here, and one browser the OS keeps patched). Skipped when it is there.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@test -x $(CHROMIUM) || { echo "installing chromium (Debian) for the UI tests"; \
	  $(SUDO) apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q --no-install-recommends chromium >/dev/null; }; }

demo: venv
	$(VENV)/bin/llmops demo

# Every setting is in pyproject.toml: `ruff check .` and `mypy llmops plugins` from the
# repository root, without flags, give exactly this result.
lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/mypy llmops plugins

test: venv browser lint
	$(PY) -m pytest tests

test-fast: venv lint
	$(PY) -m pytest tests -m "not slow"

bench: venv
	$(PY) bench/run.py

airflow: venv
	$(VENV)/bin/llmops stack start

stop: venv
	$(VENV)/bin/llmops stack stop

# The schema is created through llmops first: it serialises that with the training tasks
# (MLflow's own migration breaks when two processes run it on a fresh file at once).
mlflow: venv
	@port=$$($(PY) -c 'from llmops.config import load_config; from llmops.registry.tracking import connect; \
	  connect("sqlite:///$(LLMOPS_HOME)/mlflow.db"); print(load_config().mlflow.ui_port)') && \
	echo "MLflow UI: http://127.0.0.1:$$port  (store sqlite:///$(LLMOPS_HOME)/mlflow.db)" && \
	exec $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(LLMOPS_HOME)/mlflow.db \
	  --default-artifact-root $(LLMOPS_HOME)/mlartifacts --host 127.0.0.1 --port $$port --workers 1

clean:
	rm -rf $(LLMOPS_HOME)
