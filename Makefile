# streamd: the two commands are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint unit bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,speed]"
	touch $(STAMP)

system-deps:
	./scripts/install-system-deps.sh

## make run: demo cameras over RTSP and the daemon on streams.yaml (Ctrl-C stops)
run: system-deps $(STAMP)
	./scripts/run-demo.sh

## make test: ruff, mypy and the whole test suite
test: system-deps $(STAMP) lint
	$(BIN)/pytest -ra

lint: $(STAMP)
	$(BIN)/ruff check streamd tests
	$(BIN)/ruff format --check streamd tests
	$(BIN)/mypy

## make bench: ingest figures (decode rate per core, sampled-rate accuracy, CPU per frame)
bench: system-deps $(STAMP)
	$(BIN)/streamd bench --cameras 3 --seconds 20

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
