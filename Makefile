# Two entry points for a fresh machine (Python 3.11+ only, no root, no Docker):
#   make dev    set up a virtualenv and run the whole server on embedded defaults
#   make test   set up the virtualenv and run ruff, mypy and the test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: dev test lint install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	if command -v npm >/dev/null; then npm ci --prefix appserver/api/web --no-audit --no-fund; fi
	touch $@

install: $(BIN)/.installed

dev: install
	$(BIN)/callyard dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .callyard .pytest_cache .mypy_cache .ruff_cache
