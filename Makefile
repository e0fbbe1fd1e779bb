# Two commands for a fresh clone:  `make demo` (a profiled sample run + its report) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
MEMTOP := $(VENV)/bin/memtop

.PHONY: setup demo test test-all lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup_venv.sh
	bash scripts/setup_venv.sh $(VENV)
	touch $@

demo: setup
	$(MEMTOP) train --name demo --max-steps 60 sample_runs/transformer_finetune.py --steps 200
	$(MEMTOP) analyze latest

lint: setup
	$(PY) -m ruff check memtop tests benchmarks sample_runs scripts
	$(PY) -m mypy

# CI and `make test`: everything but the slow tests, plus their short form (-m short); under 10 minutes on 2 cores.
test: lint
	$(PY) -m pytest -q -m "not slow or short"

# every test, the slow ones too (fit's 4x predictions on every sample, the advisor's applied suggestions)
test-all: lint
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/hook_overhead.py

clean:
	rm -rf $(VENV) memtop_runs .pytest_cache .mypy_cache .ruff_cache
