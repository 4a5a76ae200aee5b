# The two commands of the README. Both work on a fresh machine (Python 3.11, Debian).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 5001

.PHONY: demo test install install-test chromium lint

# Set everything up, build the demo store (the shipped toy demo model, offline), serve the explorer.
demo: install
	$(BIN)/attnstore demo --port $(PORT)

# Set up everything the tests need (incl. Debian chromium for browser tests) and run the whole suite.
test: install-test chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[all]"

install-test: $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[all,test]"

# Debian's chromium, driven by playwright from PyPI (never `playwright install`: no browser downloads).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@chromium --version

lint:
	$(BIN)/ruff check .
