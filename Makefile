# Two entry points work on a brand-new machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test test-all lint clean gpu-wheels gpu-check

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

# The GPU check runs where a GPU is, which may reach no network and whose python3 already holds
# torch, CuPy and NVRTC: it installs only synccl and what that python lacks (defusedxml; the
# solvers are not on the runtime's path) from $(GPU_WHEELS), which `make gpu-wheels` fills
# wherever the package registries are reachable (carry the folder to a machine without them).
GPU_WHEELS := .gpu/wheels
GPU_SITE   := .gpu/site

gpu-wheels:
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	$(PYTHON) -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir $(GPU_WHEELS) . 'defusedxml>=0.7'

gpu-check:
	test -d $(GPU_WHEELS) || $(MAKE) gpu-wheels
	rm -rf $(GPU_SITE)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-index --no-deps --target $(GPU_SITE) $(GPU_WHEELS)/*.whl
	# PYTHONSAFEPATH: the repository's own synccl/ folder must not shadow the installed package.
	PYTHONSAFEPATH=1 PYTHONPATH=$(CURDIR)/$(GPU_SITE) SYNCCL_MSCCL_CORPUS=$(abspath ../shared/msccl-xml) \
		$(PYTHON) -m synccl.bench.gpu_check

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .gpu
