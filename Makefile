# faregate: two commands for a fresh clone — `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(VENV)/bin/pip

.PHONY: run test install dev services lint bench soak clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PIP) install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev

## Set up and run the gateway on its embedded default (SQLite, in-process counters, mock provider).
run: install
	$(VENV)/bin/faregate demo

## Start PostgreSQL and Redis if they are not running (used by the test suite).
services:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
	@for i in $$(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done

## Set up the dev environment, start PostgreSQL and Redis, run the whole suite.
test: dev services
	FAREGATE_REQUIRE_SERVICES=1 $(VENV)/bin/pytest -q -p no:cacheprovider

lint: dev
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy src/faregate/billing src/faregate/pricing src/faregate/policy

## Benchmarks against the mock provider, a bare pass-through and the peer gateways LiteLLM, Portkey and TensorZero (see bench/README.md).
bench: dev
	$(PY) bench/run.py

soak: dev
	$(PY) bench/soak.py

clean:
	rm -rf $(VENV) var faregate.db*
