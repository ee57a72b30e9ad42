# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRAS := dev,embedded,chroma,qdrant,langgraph
export XDG_RUNTIME_DIR ?= $(CURDIR)/.memstate/run

.PHONY: install demo test fuzz bench bench-quick lint clean

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

test: $(STAMP) | $(XDG_RUNTIME_DIR)
	$(PY) -m ruff check memstate_pg tests benchmarks examples
	$(PY) -m pytest -q -p no:cacheprovider

fuzz: $(STAMP) | $(XDG_RUNTIME_DIR)
	MEMSTATE_FUZZ_PROFILE=long $(PY) -m pytest -q tests -k fuzz

bench: $(STAMP) | $(XDG_RUNTIME_DIR)
	$(PY) -m pip install -q -e ".[$(EXTRAS),bench]"
	$(PY) -m benchmarks

bench-quick: $(STAMP) | $(XDG_RUNTIME_DIR)
	$(PY) -m benchmarks --quick --no-readme

lint: $(STAMP)
	$(PY) -m ruff check memstate_pg tests benchmarks examples
	$(PY) -m ruff format --check memstate_pg tests benchmarks examples

clean:
	rm -rf $(VENV) .memstate
