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

.PHONY: help demo test test-fast lab bench reproduce clean

help:
	@echo "make demo       IEM on the built-in demo set (no download): metrics + iem_demo.png"
	@echo "make test       every test, notebooks included (IEM_QUICK=1)"
	@echo "make lab        open the notebooks in JupyterLab"
	@echo "make bench      speed of the fast and reference implementations"
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
	$(BIN)/pip install --quiet -e ".[test,notebooks]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

$(VENV)/.lab: $(VENV)/.test
	$(BIN)/pip install --quiet -e ".[lab]"
	touch $@

demo: $(VENV)/.core
	$(BIN)/iem demo

test: $(VENV)/.test
	IEM_QUICK=1 $(BIN)/python -m pytest --nbval-lax --nbval-current-env tests notebooks

test-fast: $(VENV)/.test
	$(BIN)/python -m pytest tests -m "not slow"

lab: $(VENV)/.lab
	$(BIN)/jupyter lab notebooks

bench: $(VENV)/.core
	$(BIN)/python benchmarks/iem_speed.py

reproduce: $(VENV)/.test
	$(BIN)/python -m iemlib.reproduce --notebooks notebooks --results results $(if $(FRESH),,--skip-done)

clean:
	rm -rf $(VENV) .pytest_cache iem_demo.png
