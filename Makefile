# fiveplane — the two set-up commands are `make demo` and `make test`; each builds .venv from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install when a distribution's metadata changes.
PROJECTS := packages/fiveplane/pyproject.toml integrations/langchain-fiveplane/pyproject.toml \
	integrations/llama-index-fiveplane/pyproject.toml
STAMP := $(VENV)/.installed-$(shell cat $(PROJECTS) Makefile | sha256sum | cut -c1-16)

.PHONY: setup demo test test-fast bench lint format clean notebooks

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "uv>=0.9,<0.14"

$(STAMP): $(BIN)/python $(PROJECTS)
	VIRTUAL_ENV=$(VENV) $(BIN)/uv pip install --quiet -e "packages/fiveplane[dev,postgres,pii,otel,notebooks,bench,console]" \
		-e "integrations/langchain-fiveplane[test]" -e integrations/llama-index-fiveplane
	rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/fiveplane demo

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not postgres" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m bench

notebooks: setup
	MPLBACKEND=Agg $(BIN)/python notebooks/run.py

lint: setup
	$(BIN)/ruff check packages integrations tests bench
	$(BIN)/ruff format --check packages integrations tests bench
	$(BIN)/mypy
	$(BIN)/mypy -p langchain_fiveplane
	$(BIN)/mypy -p llama_index.tools.fiveplane

format: setup
	$(BIN)/ruff format packages integrations tests bench
	$(BIN)/ruff check --fix packages integrations tests bench

clean:
	rm -rf $(VENV) .bench .fiveplane .notebooks-out .pytest_cache .mypy_cache .ruff_cache
