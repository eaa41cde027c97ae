# Every target bootstraps itself on a fresh Debian machine (as root): system packages,
# a virtualenv in .venv, the project installed editable with its test extra.
# Debian's interpreter, not one under /root: the sandboxed agent (an unprivileged user) must
# be able to execute the venv's python for check-isolation and the Python test agents.
PY      ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.stamp-install
PYTEST_ARGS ?=
FUZZ_SECONDS ?= 60
SOAK_MINUTES ?= 10

# PID 1 of the agent's namespace (supervisor/sandbox/openshell-init.c): a static binary,
# shipped beside the package (package data; the Dockerfile's builder compiles it too).
INIT    := supervisor/sandbox/openshell-init
CC      ?= gcc
INIT_CFLAGS := -O2 -static -s -Wall -Wextra -Werror

.PHONY: all install test lint typecheck unit e2e demo bench fuzz soak clean

all: test

$(STAMP): pyproject.toml scripts/bootstrap-system.sh
	scripts/bootstrap-system.sh build test
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null
	# compat mode: a plain .pth path entry instead of an import-hook finder (~20 ms per start)
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat 2>/dev/null \
	  || $(BIN)/pip install -q -e '.[test]'
	# Byte-compile now: with PYTHONDONTWRITEBYTECODE set (as on these machines) every
	# start would otherwise compile the package from source (~0.2 s per `run`).
	$(BIN)/python -m compileall -q supervisor
	touch $(STAMP)

$(INIT): $(INIT).c
	$(CC) $(INIT_CFLAGS) -o $@ $<
	chmod 0711 $@  # not readable by the agent: its exec is non-dumpable from the start

install: $(STAMP) $(INIT)

lint: $(STAMP)
	$(BIN)/ruff check supervisor tests integration

typecheck: $(STAMP)
	$(BIN)/mypy

# Unit, property and privileged tests of the parts (tests/): no end-to-end run.
unit: $(STAMP) $(INIT)
	$(BIN)/pytest tests $(PYTEST_ARGS)

# The real `run` end to end with the development servers, and the compressed soak
# (integration/).
e2e: $(STAMP) $(INIT)
	$(BIN)/pytest integration $(PYTEST_ARGS)

test: lint typecheck unit e2e

demo: $(STAMP) $(INIT)
	$(BIN)/openshell-supervisor demo

bench: $(STAMP) $(INIT)
	scripts/bootstrap-system.sh bench
	$(BIN)/python -m integration.bench.run

# Coverage-guided fuzzing (atheris) of the HTTP head parser and the token response
# validator; FUZZ_SECONDS per target. Findings land in fuzz/findings/.
fuzz: $(STAMP)
	$(BIN)/pip install -q 'atheris>=3.0'
	$(BIN)/python -m fuzz.run --target all --seconds $(FUZZ_SECONDS)

# Mixed traffic with injected faults for SOAK_MINUTES; exits non-zero if a target is missed.
soak: $(STAMP) $(INIT)
	$(BIN)/python -m integration.soak.run --minutes $(SOAK_MINUTES)

clean:
	rm -f $(INIT)
	rm -rf $(VENV) .venv-bench .pytest_cache .mypy_cache .ruff_cache .hypothesis
