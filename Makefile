# Omoi: `make run` starts everything on a fresh machine; `make test` runs every test.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run setup serve install test test-quick check lint format migrations-check bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when requirements.txt changes.
$(STAMP): requirements.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	cp requirements.txt $(STAMP)

install: $(STAMP)

setup: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py bootstrap

# The web server, the orchestrator and OMOI_DEMO_AGENTS (default 2) simulated agents on the demo board.
run: setup
	@echo "Omoi is at http://$(HOST):$(PORT)/ (Ctrl-C stops it)"
	$(PY) -m omoi_site.launcher --bind $(HOST) --port $(PORT)

test: install
	$(PY) -m pytest

# The edit-and-run loop: everything but the browser tests and the long sweeps and fuzzing.
test-quick: install
	$(PY) -m pytest -m "not browser and not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

migrations-check: install
	$(PY) manage.py makemigrations --check --dry-run

check: lint migrations-check

# Board page and move timings, on SQLite in a temporary file, then on PostgreSQL when one answers
# (in a new omoi_bench database, dropped afterwards). Results also go to bench/results/<database>.json.
# Then the agent API over HTTP (Daphne, 16 clients, 10,000 tickets and 50,000 tasks: req/s against the health
# floor, latency, CPU per request, goals PASS/FAIL) and the live channel (fan-out latency to 200 sockets,
# queries of 1,000 idle ones), each on SQLite, then in a new database on that server with Redis
# (bench/results/api-*.json, live-*.json). Then the orchestrator: assignments per second, three orchestrators
# at once, and a full pass over 1,000 and 10,000 tickets. Last, the server's memory across uploads of 300 MB
# (bench/results/body-limit.json).
BENCH_POSTGRES_URL ?= $(or $(DATABASE_URL),postgres://postgres@127.0.0.1:5432/omoi_bench)

# Every pass runs even when another fails; make fails if any did. The URL may hold a password: not echoed.
bench: install
	@status=0; \
	DATABASE_URL= $(PY) -m bench.board || status=1; \
	DATABASE_URL='$(BENCH_POSTGRES_URL)' $(PY) -m bench.board --skip-unreachable || status=1; \
	DATABASE_URL= $(PY) -m bench.graph || status=1; DATABASE_URL='$(BENCH_POSTGRES_URL)' $(PY) -m bench.graph --skip-unreachable || status=1; \
	DATABASE_URL= $(PY) -m bench.api --database sqlite || status=1; \
	DATABASE_URL='$(BENCH_POSTGRES_URL)' $(PY) -m bench.api --database postgresql --skip-unreachable || status=1; \
	DATABASE_URL= $(PY) -m bench.live --database sqlite || status=1; \
	DATABASE_URL='$(BENCH_POSTGRES_URL)' $(PY) -m bench.live --database postgresql --skip-unreachable || status=1; \
	DATABASE_URL= $(PY) -m bench.orchestrator || status=1; \
	DATABASE_URL='$(BENCH_POSTGRES_URL)' $(PY) -m bench.orchestrator --skip-unreachable || status=1; \
	DATABASE_URL= $(PY) -m bench.analytics || status=1; \
	DATABASE_URL='$(BENCH_POSTGRES_URL)' $(PY) -m bench.analytics --skip-unreachable || status=1; \
	$(PY) -m bench.body_limit || status=1; \
	exit $$status

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache
