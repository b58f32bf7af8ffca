# Every target bootstraps what it needs from the repository: a virtual
# environment from requirements.lock, then the project installed into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard protos/headway/v1/*.proto)

.DEFAULT_GOAL := help
.PHONY: help venv gen gen-check lint typecheck unit test run fuzz clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(STAMP) ## Create the virtual environment from pinned dependencies.

gen: $(STAMP) ## Regenerate gen/ (messages, gRPC stubs, .pyi stubs) from protos/.
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PY) scripts/generate.py --out gen

gen-check: $(STAMP) ## Fail if gen/ is not what `make gen` would produce.
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PY) scripts/generate.py --check gen

lint: $(STAMP) ## ruff lint and format check.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy (strict) on server/ and client/.
	$(BIN)/mypy server/headway client/headway

unit: $(STAMP) ## Only the fast, pure unit tests.
	$(BIN)/pytest tests/unit -q

test: lint typecheck gen-check ## Everything: lint, types, generated code, all tests.
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q

# HEADWAY_FUZZ_EXAMPLES=n sets the size (default 5000), HEADWAY_FUZZ_SEED=n the seed.
fuzz: $(STAMP) ## Long fuzz run of every RPC; summary printed and in fuzz-report.txt.
	HEADWAY_FUZZ_EXAMPLES=$${HEADWAY_FUZZ_EXAMPLES:-5000} HEADWAY_FUZZ_REPORT=fuzz-report.txt \
		$(BIN)/pytest tests/fuzz -q -p no:randomly --timeout=0 -o addopts="" ; status=$$?; \
		cat fuzz-report.txt; exit $$status

run: $(STAMP) ## Run the server on 0.0.0.0:50051 with SQLite in ./headway.db.
	$(PY) -m headway.server

# Phony on their own line: bench/ is also a directory, which would look up to date.
.PHONY: bench bench-quick

bench: $(STAMP) ## Benchmarks (<10 min): bench/RESULTS.md and bench/results.json.
	$(PY) -m bench.run --profile full

bench-quick: $(STAMP) ## Benchmark smoke run (<2 min): fails if a figure is missing or insane.
	$(PY) -m bench.run --profile quick

clean: ## Remove the virtual environment and caches.
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
