# Two entry points (README): `make demo` runs the main job, `make test` runs the tests.
# Both create .venv on first use; torch comes from the CPU build pinned in constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint mutation clean

$(BIN)/shortlvlm: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

demo: $(BIN)/shortlvlm
	$(BIN)/shortlvlm demo --out shortlvlm-demo --overwrite

test: $(BIN)/shortlvlm
	$(BIN)/ruff check src tests tools
	$(BIN)/python -m pytest

lint: $(BIN)/shortlvlm
	$(BIN)/ruff check src tests tools

# Mutation testing of the core math (tools/mutation.py; hours for all mutants, not in CI or `make test`).
# Options through MUTATION, e.g. `make mutation MUTATION="--limit 20 --module importance"`.
mutation: $(BIN)/shortlvlm
	SHORTLVLM_TEST_THREADS=1 $(BIN)/python tools/mutation.py $(MUTATION)

clean:
	rm -rf $(VENV) shortlvlm-demo
