# The two commands of the README: `make up` (set up and start the product) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export INTENT_HOME ?= $(CURDIR)/.intent_home
export DAGSTER_HOME ?= $(INTENT_HOME)/dagster
HOST ?= 127.0.0.1
PORT ?= 3000

.PHONY: setup up test test-unit lint bench clean

# The virtualenv is rebuilt when pyproject.toml changes.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(BIN)/.installed

# Prepare INTENT_HOME (sample fleet, DAGSTER_HOME, pools), then start the code server, webserver and
# daemon (`intent up`; Ctrl-C stops them).
up: setup
	$(BIN)/intent init
	$(BIN)/intent up -h $(HOST) -p $(PORT)

# Lint and types, then the unit, integration and end-to-end tiers (benchmarks are separate: `make bench`),
# then a named subset of the integration tier again with PostgreSQL as the state store and Dagster storage.
# The sandbox and proxy tests need bubblewrap and nginx: installed when missing, where we are root on Debian.
POSTGRES_SUBSET := intent_pipelines_tests/integration/lifecycle intent_pipelines_tests/integration/cli \
	intent_pipelines_tests/integration/store
test: lint
	@missing=""; command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	[ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	$(BIN)/pytest -m "unit or integration or chaos or e2e" -q
	INTENT_TEST_STORAGE=postgres $(BIN)/pytest -m integration -q $(POSTGRES_SUBSET) \
		--deselect intent_pipelines_tests/integration/cli/test_bad_input.py

test-unit: setup
	$(BIN)/pytest -m unit -q

lint: setup
	$(BIN)/ruff check intent_pipelines intent_pipelines_tests bench tools
	$(BIN)/mypy
	@# A copy of the baseline is refreshed (line numbers move with every edit) and checked for new findings.
	cp .secrets.baseline .venv/secrets-baseline.json
	$(BIN)/detect-secrets scan --baseline .venv/secrets-baseline.json --exclude-files '^\.secrets\.baseline$$'
	$(BIN)/python tools/unreviewed_secrets.py .venv/secrets-baseline.json

bench: setup
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .intent_home
