# The two entry points the README opens with. Both create the environment first (CPU torch before the
# package, so that pip never pulls a multi-GB CUDA build), then run.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ssmbench-installed

.PHONY: smoke test lint clean-venv

smoke: $(STAMP)
	$(BIN)/ssmbench run suites/smoke.yaml

test: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check ssmbench tests

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

clean-venv:
	rm -rf $(VENV)
