# Two entry points work on a brand-new machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test test-all lint clean

setup: $(STAMP)

# torch is pinned to the CPU build first; the project's range then installs nothing more.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,torch]'
	$(BIN)/synccl kernels --host --arch sm_80,sm_90 > /dev/null  # build the executor kernel once, into the cache
	touch $(STAMP)

demo: setup
	$(BIN)/python examples/demo.py

test: setup
	$(BIN)/python -m pytest -q -m "not slow"

test-all: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check synccl topologies collectives synth sim runtime tests bench examples

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
