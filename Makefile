# make demo: set up .venv and run the phantom demo.
# make test: set up .venv (with test extras), lint (ruff), type-check (mypy), then run the tests; .ci/run calls it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EXTRAS ?= dev,fast,pacs,service,ui-tests,scale

.PHONY: install demo test lint clean

$(VENV)/.installed-$(EXTRAS): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[$(EXTRAS)]'
	touch $@

install: $(VENV)/.installed-$(EXTRAS)

demo:  # only the extras the demo needs (a target-specific EXTRAS would not reach install's stamp name)
	$(MAKE) install EXTRAS=dev,fast,service
	$(VENV)/bin/medanomaly demo --out demo-output

test: lint
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests
	$(PY) -m mypy
	$(PY) bench/make_tables.py --check

clean:
	rm -rf demo-output .pytest_cache
