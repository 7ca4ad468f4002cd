# mnist-kit: `make train` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/mnist-kit
RECIPE ?= baseline
ARGS ?=
PYTEST_ARGS ?=
# torch and torchvision are pinned here (pyproject has lower bounds only); empty it to let pip choose.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: help venv data train test lint clean-runs

help:
	@echo "make train [RECIPE=baseline] [ARGS='--set train.epochs=1']   set up, fetch data, train a recipe"
	@echo "make test                                                     set up, lint and run the test suite"
	@echo "make data                                                     fetch and verify MNIST into data/"
	@echo "make lint                                                     ruff"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q $(TORCH_PINS)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

data: $(STAMP)
	$(CLI) data fetch

train: $(STAMP)
	$(CLI) train $(RECIPE) $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check mnist_kit tests

test: $(STAMP) lint
	$(PY) -m pytest $(PYTEST_ARGS)

clean-runs:
	rm -rf runs
