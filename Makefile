# `make demo` and `make test` each set up .venv on a fresh machine, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test install bench clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

demo: $(INSTALLED)
	$(VENV)/bin/secateurs demo

test: $(INSTALLED)
	$(PY) -m pytest -q -n 2 --dist loadgroup

bench: $(INSTALLED)
	$(PY) -m pip install --quiet -r requirements-bench.txt

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
