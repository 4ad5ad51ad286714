# The two commands: `make demo` and `make test`. Both set up everything they need on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(VENV)/bin/pip
STAMP   = $(VENV)/.installed
# The torch + torchvision pair the install step pins (see README "The two commands"). timm's DINOv3 ViT
# family imports torchvision at import time, and torchvision only loads beside the torch build it was made
# for: this pair lies on the build machine's local wheel index, so the install downloads nothing. pip must
# not replace it: the check after the install fails loudly if something did.
TORCH_VERSION ?= 2.14.1
TORCHVISION_VERSION ?= 0.29.1
PYTEST_ARGS ?=

.PHONY: install system-deps demo test test-slow fuzz-long lint typecheck bench-ingest clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "torch==$(TORCH_VERSION)" "torchvision==$(TORCHVISION_VERSION)"
	$(PIP) install --quiet -e ".[test,pretrained]"
	@$(PY) -c "import torch, torchvision, timm; assert torch.__version__.split('+')[0] == '$(TORCH_VERSION)', torch.__version__" \
	  || (echo "torch was replaced by another build; see README 'Install'" && false)
	touch $(STAMP)

install: $(STAMP)

system-deps:
	@bash scripts/ensure-system-deps.sh

demo: install system-deps
	$(VENV)/bin/orthonode demo

test: install system-deps
	@bash scripts/ensure-services.sh
	$(VENV)/bin/ruff check orthonode ssl_train heads conformance tests benchmarks
	$(VENV)/bin/ruff format --check orthonode ssl_train heads conformance tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

test-slow: install system-deps
	$(VENV)/bin/pytest -m slow $(PYTEST_ARGS)

# Hostile input at length (issue-sized runs): 5,000 examples per property, i.e. 10,000 datasets and 5,000
# PDUs, freshly drawn (FUZZ_SEED). `make test` runs the same properties with a few hundred inputs.
fuzz-long: install system-deps
	FUZZ_EXAMPLES=5000 FUZZ_SEED=1 $(VENV)/bin/pytest -s -p no:warnings --timeout 0 tests/fuzz $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check orthonode ssl_train heads conformance tests benchmarks
	$(VENV)/bin/ruff format --check orthonode ssl_train heads conformance tests benchmarks

typecheck: install
	$(VENV)/bin/mypy

bench-ingest: install system-deps
	$(PY) benchmarks/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var
