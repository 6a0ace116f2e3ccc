# Two entry points: `make demo` runs the main job on its built-in default, `make test` runs every test.
# Each creates .venv and installs what it needs the first time.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build; a bare `torch` can pull a multi-GB CUDA build. GPU users: make TORCH="torch==2.13.0 --index-url ..."
TORCH ?= torch==2.13.0

.PHONY: demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.full: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[train,notebooks,dev]"
	touch $@ $(VENV)/.core

demo: $(VENV)/.core
	$(BIN)/ngrpo-sim report

test: $(VENV)/.full
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
