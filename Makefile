# Every target bootstraps what it needs from the repository: a virtual
# environment from requirements.lock, then the project installed into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard protos/headway/v1/*.proto)
# The buf CLI comes from npm (tools/package.json, pinned by tools/package-lock.json).
BUF := tools/node_modules/.bin/buf
TOOLS_STAMP := tools/node_modules/.installed

.DEFAULT_GOAL := help
.PHONY: help venv tools browser gen gen-check proto-lint lint typecheck unit test run fuzz clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(STAMP) ## Create the virtual environment from pinned dependencies.

$(TOOLS_STAMP): tools/package.json tools/package-lock.json
	npm ci --prefix tools --no-audit --no-fund --loglevel=error
	touch $@

tools: $(TOOLS_STAMP) ## Install the pinned non-Python tools (buf) into tools/node_modules.

# Playwright drives Debian's Chromium: its own browser download is not used.
browser: ## Install Chromium (apt-get) for the browser tests, unless it is there.
	command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)

gen: $(STAMP) ## Regenerate gen/ (messages, gRPC stubs, .pyi stubs, descriptor set with comments) from protos/.
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PY) scripts/generate.py --out gen

gen-check: $(STAMP) ## Fail if gen/ (modules and descriptor_set.binpb) is not what `make gen` would produce.
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PY) scripts/generate.py --check gen

proto-lint: $(TOOLS_STAMP) ## buf lint (STANDARD rules, see buf.yaml) and buf format check on protos/.
	$(BUF) lint
	$(BUF) format --diff --exit-code

lint: $(STAMP) ## ruff lint and format check.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy (strict) on server/ and client/.
	$(BIN)/mypy server/headway client/headway

unit: $(STAMP) ## Only the fast, pure unit tests.
	$(BIN)/pytest tests/unit -q

test: lint typecheck gen-check proto-lint browser ## Everything: lint, types, generated code, protos, all tests.
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q

# HEADWAY_FUZZ_EXAMPLES=n sets the size (default 5000), HEADWAY_FUZZ_SEED=n the seed.
fuzz: $(STAMP) ## Long fuzz run of every RPC; summary printed and in fuzz-report.txt.
	HEADWAY_FUZZ_EXAMPLES=$${HEADWAY_FUZZ_EXAMPLES:-5000} HEADWAY_FUZZ_REPORT=fuzz-report.txt \
		$(BIN)/pytest tests/fuzz -q -p no:randomly --timeout=0 -o addopts="" ; status=$$?; \
		cat fuzz-report.txt; exit $$status

run: $(STAMP) ## Run the server: gRPC on 127.0.0.1:50051, HTTP on 127.0.0.1:8080 (loopback only), SQLite in ./headway.db.
	$(PY) -m headway.server

# Phony on their own line: bench/ is also a directory, which would look up to date.
.PHONY: bench bench-quick bench-peers

bench: $(STAMP) ## Benchmarks (<10 min): bench/RESULTS.md and bench/results.json.
	$(PY) -m bench.run --profile full

bench-quick: $(STAMP) ## Benchmark smoke run (<2 min): fails if a figure is missing or insane.
	$(PY) -m bench.run --profile quick

# etcd and redis-server come from Debian: apt-get install etcd-server redis-server.
bench-peers: $(STAMP) ## Only the peers section of `make bench` (etcd, Redis pub/sub): bench/out/peers/.
	$(PY) -m bench.run --profile full --only peers --out bench/out/peers

clean: ## Remove the virtual environment, node_modules (tools, examples/node) and caches.
	rm -rf $(VENV) tools/node_modules examples/node/node_modules .mypy_cache .pytest_cache .ruff_cache .hypothesis
