PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export PYTHONUNBUFFERED := 1

.PHONY: run stop test lint bench

$(VENV)/.run-deps: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.test-deps: $(VENV)/.run-deps requirements-test.txt
	$(BIN)/pip install -q -r requirements-test.txt
	touch $@

run: $(VENV)/.run-deps            ## whole stack in the foreground on 127.0.0.1:8000; Ctrl-C stops it
	@$(BIN)/python hftweb/devrun.py

stop:                              ## stop a `make run` started in another terminal
	@if [ -f .run/devrun.pid ] && kill -0 $$(cat .run/devrun.pid) 2>/dev/null; then \
	  kill -INT $$(cat .run/devrun.pid) && echo "sent SIGINT to $$(cat .run/devrun.pid)"; \
	else echo "not running"; fi

test: $(VENV)/.test-deps          ## the whole suite with its own Redis, workers, Daphne and Chromium
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .

bench: $(VENV)/.test-deps
	$(BIN)/python benchmarks/calibrate_sim.py
