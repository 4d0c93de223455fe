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

# devrun writes its pidfile into RUN_DIR (default .run), as it does the database: the same RUN_DIR finds it.
stop:                              ## stop a `make run` started in another terminal (same RUN_DIR)
	@pidfile="$${RUN_DIR:-.run}/devrun.pid"; \
	if [ -f "$$pidfile" ] && kill -0 "$$(cat "$$pidfile")" 2>/dev/null; then \
	  kill -INT "$$(cat "$$pidfile")" && echo "sent SIGINT to $$(cat "$$pidfile") ($$pidfile)"; \
	else echo "not running ($$pidfile)"; fi

# With HFT_TEST_DATABASE_URL=postgres://user:pw@host:port/db (.ci/run starts a server and sets it), the tests marked
# `postgres` run again on that server (the role needs CREATEDB: the runner creates and drops test_<db>). Both runs
# always run; the target fails if either did.
test: $(VENV)/.test-deps          ## the whole suite with its own Redis, workers, Daphne and Chromium
	$(BIN)/ruff check .
	@status=0; $(BIN)/pytest || status=$$?; \
	if [ -n "$$HFT_TEST_DATABASE_URL" ]; then \
	  echo "== the tests marked postgres, again on PostgreSQL at $${HFT_TEST_DATABASE_URL##*@}"; t=$$(date +%s); \
	  DATABASE_URL="$$HFT_TEST_DATABASE_URL" $(BIN)/pytest -m "postgres and not slow" || status=$$?; \
	  echo "== PostgreSQL part took $$(( $$(date +%s) - t )) s"; \
	fi; exit $$status

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .

bench: $(VENV)/.test-deps
	$(BIN)/python benchmarks/calibrate_sim.py
