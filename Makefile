# One command per chore; CI runs the same ones.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8080

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,lint]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/jobhost --apps apps --data-dir .data serve --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check jobhost tests bench apps
	$(BIN)/ruff format --check jobhost tests bench apps
	$(BIN)/mypy

test: $(STAMP) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
