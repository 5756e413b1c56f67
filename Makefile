# Everyday commands. `run` and `test` create .venv and install the project on first use, and again only when
# pyproject.toml changes (the stamp file below), so a second `make test` goes straight to pytest.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

## run: the bot on http://127.0.0.1:3978 (local mode unless MicrosoftAppId is set), store in ./data
run: $(STAMP)
	$(PY) -m bot serve

## test: the whole test suite; extra pytest arguments via PYTEST_ARGS="-k settings -x"
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## bench: storage benchmarks
bench: $(STAMP)
	$(PY) bench/storage.py

## clean: the virtualenv, caches and build output (never ./data)
clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
