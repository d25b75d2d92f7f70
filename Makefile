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
MICROPYTHON_HEAP ?= 640K
# Other CPython versions whose tests `make test` runs as well, if found
# (tools/test-other-pythons.sh); `make test OTHER_PYTHONS=` runs none.
OTHER_PYTHONS ?= 3.12 3.13
# 1 makes `make test` succeed when pytest collects no tests (pytest exit status 5).
ALLOW_NO_TESTS ?= 0

.PHONY: setup test test-micropython lint clean check typecheck stubs deploy flash firmware bench soak

setup: $(SETUP_STAMP)

# The stamp is newer than both inputs once an install has finished, so a second
# `make setup` does nothing. Editing either input reinstalls into the same venv.
$(SETUP_STAMP): requirements-dev.txt pyproject.toml
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -r requirements-dev.txt
	$(PIP) install --quiet --editable .
	touch $@

# pytest first, then `make check`, then the CPython tests on the other CPython versions
# found here (tools/test-other-pythons.sh); any of them failing fails the target.
test: setup
	$(VENV_PYTHON) -m pytest $(PYTEST_ARGS) tests; \
	status=$$?; \
	if [ $$status -eq 5 ] && [ "$(ALLOW_NO_TESTS)" = 1 ]; then \
		echo "pytest collected no tests (exit status 5), accepted because ALLOW_NO_TESTS=1"; \
		status=0; \
	fi; \
	$(MAKE) --no-print-directory check || status=$$?; \
	OTHER_PYTHONS="$(OTHER_PYTHONS)" bash tools/test-other-pythons.sh || status=$$?; \
	exit $$status

test-micropython: setup
	$(VENV)/bin/micropython -X heapsize=$(MICROPYTHON_HEAP) tests/core/run.py $(CORE_TESTS)

# The full soak: 1000 alerts in each mode (pipelined, lock-step) through a server that
# fails at random, from the MicroPython unix port; prints the figures. `make test` runs 60.
soak: setup
	MICROSMTP_SOAK_ALERTS=1000 $(VENV_PYTHON) -m pytest -s $(PYTEST_ARGS) tests/test_soak.py

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .venv-* build dist *.egg-info .pytest_cache .hypothesis .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# The alert firmware on a virtual board: `make sim SIM_ARGS="--scenario FILE --heap 192K"`.
SIM_ARGS ?=
.PHONY: sim
sim: setup
	$(VENV)/bin/microsmtp sim $(SIM_ARGS)

# --- Static checks: ruff, and mypy for the firmware (against MicroPython's stubs
# for each port) and for the host tools (against CPython's typeshed) ---------------
# The ESP32 and Pico W stub packages contain the same module files, so each goes into
# its own folder, given to mypy as the standard library (--custom-typeshed-dir).
STUBS_DIR := $(VENV)/stubs
STUB_PACKAGE_esp32 := micropython-esp32-stubs==1.29.0.post1
STUB_PACKAGE_rp2 := micropython-rp2-rpi-pico-w-stubs==1.29.0.post1
FIRMWARE_SOURCES := firmware
MYPY := $(VENV)/bin/mypy

$(STUBS_DIR)/%/.stamp: $(SETUP_STAMP)
	rm -rf $(STUBS_DIR)/$*
	$(PIP) install --quiet --target $(STUBS_DIR)/$* $(STUB_PACKAGE_$*)
	touch $@

stubs: $(STUBS_DIR)/esp32/.stamp $(STUBS_DIR)/rp2/.stamp

# --always-true MICROPYTHON: check the MicroPython side of `if MICROPYTHON:` branches.
typecheck: setup stubs
	@status=0; \
	for port in esp32 rp2; do \
		echo "mypy firmware/ against the $$port stubs"; \
		$(MYPY) --custom-typeshed-dir $(STUBS_DIR)/$$port --no-site-packages --always-true MICROPYTHON \
			--cache-dir $(VENV)/mypy-cache-$$port $(FIRMWARE_SOURCES) || status=1; \
	done; \
	echo "mypy tools/ against CPython"; \
	$(MYPY) --cache-dir $(VENV)/mypy-cache-host tools/microsmtp_tools || status=1; \
	exit $$status

check: setup
	@status=0; \
	$(VENV)/bin/ruff check . || status=1; \
	$(MAKE) --no-print-directory typecheck || status=1; \
	exit $$status

# --- Boards ------------------------------------------------------------------------
# make deploy PORT=/dev/ttyUSB0 BOARD=ESP32_GENERIC CONFIG=config.json
# make flash PORT=/dev/ttyUSB0 BOARD=ESP32_GENERIC FIRMWARE=ESP32_GENERIC-v1.29.0.bin
# make firmware BOARD=RPI_PICO_W MICROPYTHON_DIR=../micropython
PORT ?=
BOARD ?= ESP32_GENERIC
CONFIG ?= config.json
CA_MODULE ?= build/ca_roots.py
FIRMWARE ?=
MICROPYTHON_DIR ?=
DEPLOY_ARGS ?= --selftest
FLASH_ARGS ?=
# make bench BENCH_ARGS= leaves out Postfix (measured only against aiosmtpd).
BENCH_ARGS ?= --server postfix

deploy: setup
	@test -n "$(PORT)" || { echo "give PORT=/dev/ttyUSB0 (or socket://127.0.0.1:N for a virtual board)"; exit 2; }
	$(VENV)/bin/microsmtp deploy --port $(PORT) --board $(BOARD) --config $(CONFIG) --ca-module $(CA_MODULE) $(DEPLOY_ARGS)

flash: setup
	@test -n "$(FIRMWARE)" || { echo "give FIRMWARE=FILE (images: https://micropython.org/download/$(BOARD)/)"; exit 2; }
	$(VENV)/bin/microsmtp flash --board $(BOARD) --firmware $(FIRMWARE) $(if $(PORT),--port $(PORT)) $(FLASH_ARGS)

firmware: setup
	@test -n "$(MICROPYTHON_DIR)" || { echo "give MICROPYTHON_DIR=path of a MicroPython source tree"; exit 2; }
	$(VENV)/bin/microsmtp firmware --board $(BOARD) --micropython $(MICROPYTHON_DIR) --ca-module $(CA_MODULE)

bench: setup
	$(VENV)/bin/microsmtp bench $(BENCH_ARGS)
