# Two commands: `make demo` and `make test`. Both install the system packages genppl uses
# (Graphviz, fortunes-ru: tools/system-packages) where the machine's package manager can,
# create the virtual environment when it is absent and install the project (torch first: the
# pinned CPU wheel, never a CUDA download).
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.genppl-installed

.PHONY: setup system-packages demo test test-all lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

system-packages:
	@sh tools/system-packages

setup: system-packages $(STAMP)

demo: setup
	$(VENV)/bin/genppl demo --out genppl-demo

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -m "unit or gallery" -q

test-all: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

bench: setup
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) genppl-demo benchmarks/results
