# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.synthaug-installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch's CPU build first, explicitly; the constraint keeps every later install on it.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/synthaug sample --out out/demo --seed 0 --age 60 --sex M --height 178 --weight 82 --diagnosis LYMPHOMA --preview --force

# Fails when a test fails and when no test ran (pytest's exit code 5: a broken collection or selection).
test: $(STAMP)
	$(VENV)/bin/ruff check synthaug tests benchmarks integrations scripts
	$(PY) -m pytest -q -x --durations=15

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) out .pytest_cache
