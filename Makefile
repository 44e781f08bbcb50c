# The two commands: `make demo` and `make test`. Both set up .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck install clean

$(STAMP): pyproject.toml integrations/langchain/pyproject.toml integrations/llama-index/pyproject.toml integrations/demo/pyproject.toml requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt \
		-e ".[all]" -e integrations/langchain -e integrations/llama-index -e integrations/demo
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/rag-optimize demo

lint: $(STAMP)
	$(BIN)/ruff check src integrations tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy src/rag_optimize integrations/langchain/langchain_rag_optimize \
		integrations/llama-index/llama_index_rag_optimize integrations/demo/rag_optimize_demo

test: lint typecheck
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV)
