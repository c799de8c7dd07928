# Two commands do all the set-up on a fresh machine:
#   make demo   installs what it needs, then opens napari with the sample case and the plugin
#   make test   installs what it needs (Xvfb and the Qt libraries too), then runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mriseg-installed
XVFB := xvfb-run -a -s "-screen 0 1600x1000x24"

.PHONY: demo test test-all install system-deps lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e ".[pyqt5,test,bench]"
	touch $(STAMP)

install: $(STAMP)

system-deps:
	bash scripts/install_system_deps.sh

demo: system-deps install
	$(VENV)/bin/mriseg demo

test: system-deps install
	$(XVFB) $(PY) -m pytest

test-all: system-deps install
	$(XVFB) $(PY) -m pytest -m ""

lint: install
	$(VENV)/bin/ruff check napari_mriseg tests benchmarks scripts

clean:
	rm -rf $(VENV) build dist *.egg-info
