# monai-medunic: `make demo` runs the main job on the embedded default data; `make test` runs the suite.
# Both create (or reuse) the project virtual environment and install everything a fresh machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch; pinned through constraints.txt so that no dependency pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0
TXV_SPEC ?= torchxrayvision==1.5.7
DEMO_OUT ?= demo_output
STAMP := $(VENV)/.medunic-installed
PIP := $(BIN)/python -m pip --disable-pip-version-check

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test install clean benchmarks

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24"
	$(PIP) install -q -c constraints.txt "$(TORCH_SPEC)"
	$(PIP) install -q -c constraints.txt -e ".[dev,deploy]"
	# Real report corpora (IU X-ray, PadChest) ship as data files in this wheel; never imported.
	$(PIP) install -q --no-deps "$(TXV_SPEC)"
	@bash scripts/ensure_system_tools.sh
	@touch $@

demo: $(STAMP)
	ulimit -s 32768 && $(BIN)/medunic demo --out $(DEMO_OUT)

test: $(STAMP)
	ulimit -s 32768 && $(BIN)/python -m pytest -q -p no:cacheprovider tests

benchmarks: $(STAMP)
	ulimit -s 32768 && for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_OUT) *.egg-info
