# Every target sets up its own environment first (.venv, created on demand).
# Data: $IEM_DATA_DIR if set, else ../shared/data when it exists beside the project, else data/.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch 2.13.0; any torch 2.x build (CUDA included) works with iemlib. TORCH_INDEX picks
# the wheel index, e.g. https://download.pytorch.org/whl/cpu for the small CPU-only build
# (PyPI's Linux wheel is the CUDA build, several GB).
TORCH  ?= torch==2.13.0
TORCH_INDEX ?=
IEM_DATA_DIR ?= $(abspath $(if $(wildcard ../shared/data),../shared/data,data))
export IEM_DATA_DIR

# The notebooks' checked cells must print the same on every machine. The second pass of
# `make test` runs them again with other arithmetic: one thread, PyTorch's and oneDNN's
# generic CPU kernels, and OpenBLAS / MKL kernels of another CPU generation (a different
# summation order, as on another machine). A cell that prints round-off then fails here.
ARCH := $(shell uname -m)
OTHER_ARITHMETIC ?= OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
	ATEN_CPU_CAPABILITY=default DNNL_MAX_CPU_ISA=SSE41 \
	$(if $(filter x86_64,$(ARCH)),OPENBLAS_CORETYPE=Prescott MKL_ENABLE_INSTRUCTIONS=SSE4_2) \
	$(if $(filter aarch64,$(ARCH)),OPENBLAS_CORETYPE=ARMV8)

.PHONY: help demo test test-fast test-arithmetic lab bench reproduce clean

help:
	@echo "make demo       IEM on the built-in demo set (no download): metrics + iem_demo.png"
	@echo "make test       every test, notebooks included (IEM_QUICK=1), then the notebooks'"
	@echo "                checked cells again under other arithmetic (make test-arithmetic);"
	@echo "                the explorer's browser test runs where Chromium is installed"
	@echo "make lab        open the notebooks in JupyterLab"
	@echo "make bench      speed of the fast and reference implementations, of learned inpainters, and of the field's other methods"
	@echo "make reproduce  run every notebook headless; tables in results/ (resumes; FRESH=1 reruns all)"
	@echo "data: $(IEM_DATA_DIR)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.core: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(BIN)/pip install --quiet -e ".[test,notebooks,browser]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

$(VENV)/.lab: $(VENV)/.test
	$(BIN)/pip install --quiet -e ".[lab]"
	touch $@

demo: $(VENV)/.core
	$(BIN)/iem demo

test: $(VENV)/.test
	IEM_QUICK=1 $(BIN)/python -m pytest --nbval-lax --nbval-current-env tests notebooks
	$(MAKE) --no-print-directory test-arithmetic

test-arithmetic: $(VENV)/.test
	env $(OTHER_ARITHMETIC) IEM_QUICK=1 $(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks

test-fast: $(VENV)/.test
	$(BIN)/python -m pytest tests -m "not slow and not browser"

# Bound to this machine only; as root (containers, fresh cloud machines) Jupyter refuses to
# start without --allow-root. LAB_ARGS adds options, e.g. LAB_ARGS="--port 8890 --no-browser".
LAB_ARGS ?=
lab: $(VENV)/.lab
	$(BIN)/jupyter lab notebooks --ServerApp.ip=127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

bench: $(VENV)/.core
	$(BIN)/python benchmarks/iem_speed.py
	$(BIN)/python benchmarks/learned_speed.py
	$(BIN)/python benchmarks/related_speed.py

reproduce: $(VENV)/.test
	$(BIN)/python -m iemlib.reproduce --notebooks notebooks --results results $(if $(FRESH),,--skip-done)

clean:
	rm -rf $(VENV) .pytest_cache iem_demo.png
