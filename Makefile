# Two entry points: `make run` (set up, then the pipeline on config.yaml) and `make test`;
# `make lint` is what CI runs before the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= all
ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup run test lint report clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/snakemake --cores $(CORES) $(ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests bench workflow/scripts
	$(VENV)/bin/snakefmt --check workflow/ Snakefile
	$(VENV)/bin/snakemake --lint

clean:
	rm -rf results .snakemake
