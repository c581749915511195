# One command per chore; CI runs the same ones (.ci/run calls `make test`).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080

.PHONY: install run test lint bench bench-peers fuzz clean

# The venv, the package (editable) and its runtime dependencies.
$(VENV)/.installed-run: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

# Plus the test and lint extras (PostgreSQL driver, Celery, Playwright, ruff, mypy...).
$(VENV)/.installed-test: $(VENV)/.installed-run
	$(BIN)/python -m pip install -q -e '.[test,lint]'
	touch $@

install: $(VENV)/.installed-test

run: $(VENV)/.installed-run
	$(BIN)/jobhost --apps apps --data-dir .data serve --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check jobhost tests bench apps
	$(BIN)/ruff format --check jobhost tests bench apps
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Schemathesis over the whole API with a large budget and a new seed each run (make test
# runs the same test with 4 derandomized examples per operation). FUZZ_EXAMPLES to change.
FUZZ_EXAMPLES ?= 300
fuzz: $(VENV)/.installed-test
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_RANDOM=1 $(BIN)/python -m pytest tests/test_schemathesis.py -p no:cacheprovider -o timeout=0 $(PYTEST_ARGS)

bench: $(VENV)/.installed-test
	$(BIN)/python -m bench $(BENCH)

# JobHost next to Celery + Redis, APScheduler, supervisord and the raw spawn limits, in one
# run (REPS repetitions, interleaved). The peers get a virtualenv of their own, so the
# product's dependencies do not grow.
PEERS_VENV := .venv-peers
REPS       ?= 2
$(PEERS_VENV)/.installed: bench/peers/requirements.txt
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q -r bench/peers/requirements.txt
	touch $@

bench-peers: $(VENV)/.installed-test $(PEERS_VENV)/.installed
	$(BIN)/python -m bench.side_by_side --peers-python $(PEERS_VENV)/bin/python --reps $(REPS)

clean:
	rm -rf $(VENV) $(PEERS_VENV) .data .pytest_cache .mypy_cache .ruff_cache
