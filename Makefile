PY ?= .venv/bin/python

.PHONY: setup test test-all lint format

setup:
	bash .ci/setup

# Default test run (< 10 minutes on 2 cores): unit, trainer end-to-end and 2-process tests; `slow` ones excluded.
test:
	$(PY) -m pytest -m "not slow" -q

test-all:
	$(PY) -m pytest -q

lint:
	$(PY) -m ruff check dapo_trl tests recipes benchmarks
	$(PY) -m ruff format --check dapo_trl tests recipes benchmarks

format:
	$(PY) -m ruff format dapo_trl tests recipes benchmarks
	$(PY) -m ruff check --fix dapo_trl tests recipes benchmarks
