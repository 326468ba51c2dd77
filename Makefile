# The README's two commands: `make quickstart` and `make test`.
# Both create .venv with Python 3.11+ and install iacorch from this checkout.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install quickstart test lint bench clean

$(BIN)/iacorch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -m compileall -q iacorch >/dev/null  # as a wheel install would; saves ~0.1 s per command
	touch $@

install: $(BIN)/iacorch

quickstart: install
	$(BIN)/iacorch validate plans/quickstart.yaml
	$(BIN)/iacorch graph plans/quickstart.yaml
	$(BIN)/iacorch apply plans/quickstart.yaml

lint: install
	$(BIN)/ruff check iacorch tests bench
	$(BIN)/mypy

test: install lint
	$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
	  if [ $$status -eq 5 ]; then echo "pytest collected no tests: that proves nothing" >&2; exit 1; fi; \
	  exit $$status

bench: install
	$(BIN)/python bench/compile.py
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) .iacorch .pytest_cache .mypy_cache .ruff_cache
