# campose: the book and its library. GNU make.
#
#   make book [PROFILE=quick]   execute every chapter with papermill and render _build/html/index.html
#   make test [PYTEST_ARGS=...] the whole test suite (library, notebooks, book build)
#   make bench [BENCH_PROFILE=quick] [README=1] [BENCH_ARGS="--only NAME ..."]
#                               run every benchmarks/*.py (quick: about 20 min), results and a summary table in
#                               benchmarks/results/ (summary.md); README=1 also writes the table into README.md
#   make clean | clean-runs     remove _build | remove the cached stages in data/runs
#
# Every target first runs `setup`: a virtual environment in .venv with `pip install -e ".[dev]"`,
# redone only when pyproject.toml changes (stamp: .venv/.setup-stamp).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
PROFILE ?= full
PYTEST_ARGS ?=
BENCH_PROFILE ?= quick
BENCH_ARGS ?=

.PHONY: help setup test book bench clean clean-runs clean-venv

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

setup: $(STAMP)

# Python: $(PYTHON) (default python3.11), else python3; it must be 3.11 or newer. A .venv made by an
# older Python is refused rather than silently reused.
$(STAMP): pyproject.toml
	@py=""; \
	for cand in "$(PYTHON)" python3; do \
	  if command -v "$$cand" >/dev/null 2>&1 \
	     && "$$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then \
	    py="$$cand"; break; \
	  fi; \
	done; \
	if [ -z "$$py" ]; then \
	  echo "error: campose needs Python >= 3.11; $(PYTHON): $$("$(PYTHON)" -V 2>&1 || echo missing);" \
	       "python3: $$(python3 -V 2>&1 || echo missing)" >&2; \
	  echo "       Install Python 3.11 or point make at it: make PYTHON=/path/to/python3.11 setup" >&2; \
	  exit 1; \
	fi; \
	if [ -x $(VPY) ]; then \
	  $(VPY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	    echo "error: $(VENV) was made with $$($(VPY) -V 2>&1); remove it (make clean-venv) and rerun" >&2; exit 1; }; \
	else \
	  echo "creating $(VENV) with $$py ($$("$$py" -V 2>&1))"; \
	  "$$py" -m venv $(VENV); \
	fi
	$(VPY) -m pip install -e ".[dev]"
	@touch $(STAMP)

# The dashboard's browser test needs Chromium: installed with apt where it is missing and we are root;
# a failed install only warns (that test then skips).
test: setup
	@if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing chromium for the dashboard's browser test"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium \
	    || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; } \
	    || echo "warning: could not install chromium; tests/test_serve_browser.py will be skipped" >&2; \
	fi
	$(VPY) -m pytest $(PYTEST_ARGS)

book: setup
	$(VPY) -m campose.book --profile $(PROFILE)

bench: setup
	$(VPY) benchmarks/_run_all.py --profile $(BENCH_PROFILE) $(if $(filter 1 yes true,$(README)),--update-readme) $(BENCH_ARGS)

clean:
	rm -rf _build

clean-runs:
	rm -rf data/runs

clean-venv:
	rm -rf $(VENV)
