# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HAYSTACK_TELEMETRY_ENABLED := False

.PHONY: install demo test lint typecheck clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-installs only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

## The main job: prepare the offline default models and show that they load and embed.
demo: install
	$(BIN)/kotae models prepare
	$(BIN)/kotae models list
	$(BIN)/kotae models check multilingual-e5-small
	$(BIN)/kotae models check all-minilm-l6-v2

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

## All checks: lint, types, the test suite.
test: lint typecheck
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
