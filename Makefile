# Anubis: two commands set everything up on a fresh clone (Python 3.11+, no database server).
#   make demo   – virtualenv, install, sandboxes, demo orders, one full pass, status
#   make test   – virtualenv, install, the whole test suite (SQLite, and PostgreSQL if reachable)
#   make ui     – the Dagster UI (and daemon) on the same data as `make demo` (same sandboxes)
#   make stop-sandboxes – stop the sandboxes `make demo` / `make ui` left running
#   make test-topology – the production topology as processes on PostgreSQL (~6 min)
#   make test-browser  – headless Chromium on the Dagster UI of a demo instance (~3 min)
#   make screenshots   – refresh docs/images, the pictures of docs/operating.md (~4 min)
#   make definitions-snapshot – refresh the definitions snapshot test's file after a change

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export ANUBIS_HOME  ?= $(CURDIR)/.anubis
export DAGSTER_HOME ?= $(ANUBIS_HOME)/dagster_home

.PHONY: install demo test test-topology test-browser screenshots browser-deps ui lint bench clean \
	definitions-snapshot stop-sandboxes

$(BIN)/anubis: pyproject.toml sandboxes/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]' -e ./sandboxes
	@touch $@

install: $(BIN)/anubis
	@mkdir -p $(DAGSTER_HOME)
	@cp -n dagster.yaml $(DAGSTER_HOME)/dagster.yaml 2>/dev/null || true

demo: install
	bash scripts/demo.sh

test: install
	$(BIN)/python -m pytest -n 2 -q

# gRPC code server + dagster-daemon + dagster-webserver + sandboxes as separate processes, on a
# fresh PostgreSQL instance with deploy/postgres/dagster.yaml (needs PostgreSQL on 127.0.0.1)
test-topology: install
	$(BIN)/python -m pytest -m topology -q

# Playwright drives the system's Chromium (Debian: apt-get install chromium); it never downloads
# a browser of its own
browser-deps: install
	@$(BIN)/python -c 'import playwright' 2>/dev/null || \
	  $(BIN)/pip install --quiet --disable-pip-version-check -e '.[browser]'
	@test -n "$$CHROMIUM" || command -v chromium >/dev/null || command -v chromium-browser \
	  >/dev/null || { echo "no Chromium: apt-get install chromium, or set CHROMIUM"; exit 1; }

# a student_lookup launched from the Launchpad and the health checks, asserted in the UI
test-browser: browser-deps
	$(BIN)/python -m pytest -m browser -q

screenshots: browser-deps
	@# the script imports the browser check's page helpers (anubis_dagster_tests, not installed)
	PYTHONPATH=$(CURDIR) $(BIN)/python scripts/screenshots.py --out docs/images

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy anubis_dagster sandboxes/anubis_sandboxes
	$(BIN)/lint-imports
	$(BIN)/bandit -c pyproject.toml -r anubis_dagster -q
	@# the code location loads as Dagster loads it (exit 1 on an error); Dagster 1.13 calls this
	@# command superseded by `dg check defs`, whose CLI (dagster-dg-cli) is not installed here
	$(BIN)/dagster definitions validate -w workspace.yaml --log-level warning

# after an intended change to jobs, sensors, schedules, partitions, tags or asset checks:
# rewrite anubis_dagster_tests/snapshots/definitions.txt (review its diff, commit it)
definitions-snapshot: install
	ANUBIS_UPDATE_SNAPSHOTS=1 $(BIN)/python -m pytest -q anubis_dagster_tests/test_definitions_snapshot.py

# the workspace file names the code location `anubis`, as `anubis run` and production do (a
# run's Re-execute finds its location by that name); started from DAGSTER_HOME, where the
# instance's dagster.yaml is, so `dagster dev` does not warn about the repository's copy. The
# sandboxes `make demo` left running are reused, with their state (consents, registrations):
# they keep running after the UI stops, until `make stop-sandboxes`
ui: install
	@scripts/sandboxes.sh ensure
	bash -c 'source scripts/sandbox.env && \
	  cd "$(DAGSTER_HOME)" && $(CURDIR)/$(BIN)/dagster dev -w $(CURDIR)/workspace.yaml'

stop-sandboxes:
	@scripts/sandboxes.sh stop


clean:
	rm -rf .anubis
