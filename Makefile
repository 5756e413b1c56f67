# Everyday commands. `run` and `test` create .venv and install the project on first use, and again only when
# pyproject.toml changes (the stamp file below), so a second `make test` goes straight to pytest. `test` also
# installs what the card rendering test needs: Debian's chromium (with Liberation Sans, Arial's metrics, for the
# cards' Segoe UI font stack) only when /usr/bin/chromium is missing, and tests/render/node_modules only when its
# package-lock.json is newer than the install (npm writes node_modules/.package-lock.json); likewise
# tests/e2e/node_modules for the end-to-end test in Microsoft 365 Agents Playground (and `make playground`).

PYTHON ?= python3
NPM ?= npm
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
RENDER := tests/render
RENDER_STAMP := $(RENDER)/node_modules/.package-lock.json
E2E := tests/e2e
E2E_STAMP := $(E2E)/node_modules/.package-lock.json
PYTEST_ARGS ?=

.PHONY: run test bench clean playground e2e

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

# Microsoft 365 Agents Playground and playwright-core, exactly as package-lock.json pins them.
$(E2E_STAMP): $(E2E)/package-lock.json $(E2E)/package.json
	$(NPM) ci --prefix $(E2E) --no-audit --no-fund
	touch $@

## run: the bot on http://127.0.0.1:3978 (local mode unless MicrosoftAppId is set), store in ./data
run: $(STAMP)
	$(PY) -m bot serve

## test: the whole test suite; extra pytest arguments via PYTEST_ARGS="-k settings -x"
test: $(STAMP) $(CHROMIUM) $(RENDER_STAMP) $(E2E_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## playground: try it in Microsoft 365 Agents Playground: the bot (local mode, port BOT_PORT, default 3978) and
## the Playground (PLAYGROUND_PORT, default 56150), both on 127.0.0.1, until Ctrl-C; you are Alex Wilber, an admin
playground: $(STAMP) $(E2E_STAMP)
	$(PY) $(E2E)/launch.py

## e2e: only the end-to-end test in the Playground (screenshots and logs in artifacts/e2e/)
e2e: $(STAMP) $(CHROMIUM) $(E2E_STAMP)
	$(PY) -m pytest $(E2E) $(PYTEST_ARGS)

## bench: storage benchmarks, importing 100k usage rows, then turns against the echo bot and the bare handler
bench: $(STAMP)
	$(PY) bench/storage.py
	$(PY) bench/usage_import.py --rows 100000
	$(PY) bench/turns/run.py

## clean: the virtualenv, caches, build output, the node_modules of the tests and artifacts/ (never ./data)
clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info $(RENDER)/node_modules $(E2E)/node_modules artifacts
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
