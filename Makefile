# One-command set-up: `make demo` and `make test` create the virtual environment on first use.
# One .venv in two layers: `make demo` installs the runtime (requirements.txt: TensorFlow, uproot,
# ...); `make test` / `make setup` add the test tools (requirements-dev.txt: pytest and the 248 MB
# CERN ROOT used only by the macro tests). The demo never installs the dev layer.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONPATH := $(CURDIR)

.PHONY: setup setup-runtime test test-slow demo bench clean

setup: $(VENV)/.installed

setup-runtime: $(VENV)/.runtime-installed

$(VENV)/.runtime-installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed: $(VENV)/.runtime-installed requirements-dev.txt
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile

test-slow: setup
	$(PY) -m pytest -q -m slow

demo: setup-runtime
	$(PY) demo.py

bench: setup
	$(PY) benchmarks/bench_generators.py
	$(PY) benchmarks/bench_loader.py

clean:
	rm -rf runs data benchmarks/results .pytest_cache
