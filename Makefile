# Everyday commands. `run` and `test` create .venv and install the project on first use, and again only when
# pyproject.toml changes (the stamp file below), so a second `make test` goes straight to pytest. `test` also
# installs what the card rendering test needs: Debian's chromium (with Liberation Sans, Arial's metrics, for the
# cards' Segoe UI font stack) only when /usr/bin/chromium is missing, and tests/render/node_modules only when its
# package-lock.json is newer than the install (npm writes node_modules/.package-lock.json).

PYTHON ?= python3
NPM ?= npm
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
RENDER := tests/render
RENDER_STAMP := $(RENDER)/node_modules/.package-lock.json
PYTEST_ARGS ?=

.PHONY: run test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# The browser tests/render/render.mjs drives (Playwright's own browser download does not work here).
$(CHROMIUM):
	apt-get update && apt-get install -y --no-install-recommends chromium fonts-liberation

# The official adaptivecards renderer and playwright-core, exactly as package-lock.json pins them.
$(RENDER_STAMP): $(RENDER)/package-lock.json $(RENDER)/package.json
	$(NPM) ci --prefix $(RENDER) --no-audit --no-fund
	touch $@

## run: the bot on http://127.0.0.1:3978 (local mode unless MicrosoftAppId is set), store in ./data
run: $(STAMP)
	$(PY) -m bot serve

## test: the whole test suite; extra pytest arguments via PYTEST_ARGS="-k settings -x"
test: $(STAMP) $(CHROMIUM) $(RENDER_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## bench: storage benchmarks, then importing 100k usage rows
bench: $(STAMP)
	$(PY) bench/storage.py
	$(PY) bench/usage_import.py --rows 100000

## clean: the virtualenv, caches, build output, the renderer's node_modules and artifacts/ (never ./data)
clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info $(RENDER)/node_modules artifacts
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
