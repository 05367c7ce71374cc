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

# MONAI Label 0.8.5 needs pydicom < 3 and numpy < 2: it gets its own virtual environment, with the same
# CPU torch, monailabel without its torchvision / SAM2 extras, and this package (--no-deps); see
# apps/monailabel_medunic/requirements.txt. No Deploy SDK there.
LABEL_VENV ?= .venv-label
LABEL_BIN := $(LABEL_VENV)/bin
LABEL_STAMP := $(LABEL_VENV)/.medunic-label-installed
LABEL_PIP := $(LABEL_BIN)/python -m pip --disable-pip-version-check
LABEL_REQUIREMENTS := apps/monailabel_medunic/requirements.txt
MONAILABEL_SPEC ?= monailabel==0.8.5

.PHONY: demo test install label-install clean benchmarks

install: $(STAMP)

label-install: $(LABEL_STAMP)

$(LABEL_STAMP): pyproject.toml constraints.txt Makefile $(LABEL_REQUIREMENTS)
	@test -x $(LABEL_BIN)/python || $(PYTHON) -m venv $(LABEL_VENV)
	$(LABEL_PIP) install -q --upgrade "pip>=24"
	$(LABEL_PIP) install -q -c constraints.txt "$(TORCH_SPEC)"
	$(LABEL_PIP) install -q -c constraints.txt -r $(LABEL_REQUIREMENTS)
	$(LABEL_PIP) install -q -c constraints.txt --no-deps "$(MONAILABEL_SPEC)"
	$(LABEL_PIP) install -q --no-deps -e .
	@touch $@

$(STAMP): pyproject.toml constraints.txt Makefile scripts/ensure_system_tools.sh
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

test: $(STAMP) $(LABEL_STAMP)
	ulimit -s 32768 && $(BIN)/python -m pytest -q -p no:cacheprovider tests

benchmarks: $(STAMP) $(LABEL_STAMP)
	ulimit -s 32768 && for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(LABEL_VENV) $(DEMO_OUT) *.egg-info
