# `make demo` and `make test` set everything up on a fresh machine: a .venv with torch==2.13.0 (CPU) installed
# first, then invarlab with every version pinned by requirements/constraints.txt. A second call reuses the venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.invarlab-installed
DEMO_OUT ?= demo_out

.PHONY: demo test lint format venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]' -c requirements/constraints.txt
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/invarlab run configs/quickstart.yaml train.run_dir=$(DEMO_OUT)/quickstart
	$(VENV)/bin/invarlab world show quickstart --out $(DEMO_OUT)/world

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

test: lint
	$(PY) -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
