# Development tasks. `make test` works on a fresh clone because it runs `setup` first.

PYTHON ?= python3
VENV ?= .venv
VENV_PYTHON := $(VENV)/bin/python
PIP := $(VENV_PYTHON) -m pip --disable-pip-version-check
SETUP_STAMP := $(VENV)/.setup-stamp

# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k starttls -x"`.
PYTEST_ARGS ?=
# Core test modules for `make test-micropython` (default: all of tests/core/test_*.py).
CORE_TESTS ?=
# MicroPython heap for `make test-micropython`, in the unix port's -X heapsize syntax.
MICROPYTHON_HEAP ?= 512K
# 1 makes `make test` succeed when pytest collects no tests (pytest exit status 5).
ALLOW_NO_TESTS ?= 0

.PHONY: setup test test-micropython lint clean

setup: $(SETUP_STAMP)

# The stamp is newer than both inputs once an install has finished, so a second
# `make setup` does nothing. Editing either input reinstalls into the same venv.
$(SETUP_STAMP): requirements-dev.txt pyproject.toml
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -r requirements-dev.txt
	$(PIP) install --quiet --editable .
	touch $@

test: setup
	$(VENV_PYTHON) -m pytest $(PYTEST_ARGS) tests; \
	status=$$?; \
	if [ $$status -eq 5 ] && [ "$(ALLOW_NO_TESTS)" = 1 ]; then \
		echo "pytest collected no tests (exit status 5), accepted because ALLOW_NO_TESTS=1"; \
		status=0; \
	fi; \
	exit $$status

test-micropython: setup
	$(VENV)/bin/micropython -X heapsize=$(MICROPYTHON_HEAP) tests/core/run.py $(CORE_TESTS)

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
