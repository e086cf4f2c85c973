# `make run` starts the app; `make test` runs the whole suite. Both set up what they need first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SYSTEM_PACKAGES := chromium fonts-noto-cjk

.PHONY: setup run test system-packages clean

setup: $(STAMP) system-packages

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# Debian's chromium drives the browser tests; fonts-noto-cjk draws Chinese in it.
system-packages:
	@dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); }

run: $(STAMP)
	$(VENV)/bin/streamlit run app/Home.py

test: setup
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache
