# make test   -- the whole test suite (unit, integration, end to end) against real RabbitMQ and DCMTK
# make unit   -- the fast tests only (no broker, no gateway processes, no slow suites)
# make lint   -- ruff (lint + format check) and mypy
# make up     -- every service as a local process (no Docker needed)
# make bench  -- the benchmarks under bench/
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/karnak.example.yml

.PHONY: venv test unit lint format up bench clean

$(BIN)/karnak: requirements-dev.txt libs/dicom/pyproject.toml libs/monitor/pyproject.toml shared/pyproject.toml services/*/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(BIN)/karnak

venv: $(BIN)/karnak

test: venv
	$(BIN)/pytest -q

# The fast tests: no broker, no gateway processes, no slow suites (markers set in tests/conftest.py).
unit: venv
	$(BIN)/pytest -q -m "not integration and not e2e and not slow and not browser and not fault and not fuzz"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

up: venv
	$(BIN)/karnak up --config $(CONFIG)

bench: venv
	@for script in bench/deid.py bench/gateway.py bench/stow_throughput.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var
