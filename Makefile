# The two commands: `make demo` and `make test`. Both set up everything they need on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(VENV)/bin/pip
STAMP   = $(VENV)/.installed
# The CPU wheel of torch that the install step pins (see README "Install"). pip must not replace it:
# the check after the install fails loudly if something did.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install system-deps demo test test-slow lint typecheck bench-ingest clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[test]"
	@$(PY) -c "import torch; assert torch.__version__.split('+')[0] == '$(TORCH_SPEC)'.split('==')[1], torch.__version__" \
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

lint: install
	$(VENV)/bin/ruff check orthonode ssl_train heads conformance tests benchmarks
	$(VENV)/bin/ruff format --check orthonode ssl_train heads conformance tests benchmarks

typecheck: install
	$(VENV)/bin/mypy

bench-ingest: install system-deps
	$(PY) benchmarks/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var
