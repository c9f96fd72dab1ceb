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

## The main job: offline models, an index of the bundled examples (ja + en), answers to sample questions.
demo: install
	$(BIN)/kotae models prepare
	$(BIN)/kotae index --config configs/pipeline/default.yaml --corpus examples/ja examples/en
	$(BIN)/kotae ask --config configs/pipeline/default.yaml --top-k 1 \
		"8世紀に日本の首都はどこでしたか。" \
		"エリザベス1世の父は誰か。" \
		"オーストラリアで初めて金鉱が発見されたのは何年のことですか。" \
		"Who did Martin Luther marry?" \
		"Who was the first person in space?" \
		"What are Ctenophora commonly known as?"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

## All checks: lint, types, the test suite.
test: lint typecheck
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
