# Two commands do all the set-up: `make demo` and `make test`.
# Both create .venv when absent and install the project with constraints.txt
# (torch pinned to the CPU build); a second run installs nothing unless
# pyproject.toml or constraints.txt changed.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= cluster,openvino,dev
comma  := ,
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

# command:package pairs the integration tests need from the OS (apt-get).
OS_DEPS ?= mosquitto:mosquitto wrk:wrk promtool:prometheus chromium:chromium

.PHONY: all install os-deps lint typecheck test test-fast demo bench docs clean
all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

install: $(STAMP)

os-deps:
	@missing=""; for pair in $(OS_DEPS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing OS packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: install
	$(BIN)/mypy

test: install os-deps lint typecheck
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not slow"

demo: install
	$(BIN)/edgeml demo

# Every benchmark, each against its peer in the same run; results land in bench/RESULTS.md.
bench: install os-deps
	@for script in bench/*.py; do \
	  case $$script in bench/common.py) continue;; esac; \
	  echo "== $$script"; $(BIN)/python $$script || exit 1; \
	done

docs: install
	$(BIN)/edgeml spec docs --out docs/spec.md

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
