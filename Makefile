# Two commands do all the set-up: `make demo` and `make test`.
# Both create .venv when absent and install exactly what requirements.lock names (hashes
# checked), then the project itself; a second run installs nothing unless the lock or
# pyproject.toml changed. `make lock` re-resolves the locks on purpose.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= cluster,openvino,dev
# A device-only venv: make install EXTRAS=edge LOCK=requirements-edge.lock
LOCK   ?= requirements.lock
comma  := ,
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

# command:package pairs the integration tests need from the OS (apt-get).
OS_DEPS ?= mosquitto:mosquitto wrk:wrk promtool:prometheus chromium:chromium h2load:nghttp2-client

.PHONY: all install os-deps lint typecheck test test-fast demo bench bench-smoke docs clean lock fresh-check grpc-gen
all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==26.3

# The lock covers every extra; the project goes in on top without resolving anything.
$(STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e '.[$(EXTRAS)]'
	touch $@

# One lock for the whole stack (this machine's platform, torch's CPU build from /opt/wheels)
# and one for what a device may install, the edge and openvino extras (every platform: devices
# are x86-64 and arm64; gRPC for those that serve it), held to the same versions; devices use it as constraints, so a
# device that asks for [edge] alone gets no OpenVINO. tests/test_lock.py fails when pyproject.toml asks for what a lock lacks.
# `make lock` keeps every pin it can and resolves only what changed; `make lock UPGRADE=1`
# moves everything to the newest releases (then run the suite before landing it).
UV_VERSION ?= 0.13.9
UV := $(VENV)/tools/bin/uv
UPGRADE ?=
UV_UPGRADE := $(if $(UPGRADE),--upgrade,)
$(UV):
	$(PYTHON) -m venv $(VENV)/tools
	$(VENV)/tools/bin/python -m pip install --quiet uv==$(UV_VERSION)

lock: $(UV)
	$(UV) pip compile pyproject.toml --all-extras -c constraints.txt --find-links /opt/wheels \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes \
	  --emit-find-links --no-header $(UV_UPGRADE) -o requirements.lock
	$(UV) pip compile pyproject.toml --extra edge --extra edge-grpc --extra openvino -c constraints.txt -c requirements.lock \
	  --universal --python-version 3.11 --generate-hashes --no-header $(UV_UPGRADE) -o requirements-edge.lock

# make test in a fresh clone of this checkout's HEAD, with a new venv installed from the lock:
# what CI and a new user get. Run it before landing a change to dependencies or the Makefile.
fresh-check:
	@dir=$$(mktemp -d /tmp/edgeml-fresh.XXXXXX); \
	echo "fresh clone in $$dir"; \
	git clone --quiet . $$dir/edgeml && $(MAKE) -C $$dir/edgeml test; \
	rc=$$?; rm -rf $$dir; exit $$rc

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

# One worker per core, each module whole on one worker (its fixtures, e.g. a local Ray, start once);
# the slowest tests are listed at the end. `pytest -n 0` runs in one process. Files are handed out
# longest first (tests/durations.json; xdist would reorder them by test count without the flag).
PYTEST_PARALLEL ?= -n auto --dist loadfile --no-loadscope-reorder --durations=30
test: install os-deps lint typecheck
	$(BIN)/pytest $(PYTEST_PARALLEL)

test-fast: install
	$(BIN)/pytest -m "not slow"

demo: install
	$(BIN)/edgeml demo

# Every benchmark in one go, each against its peer in the same run, on free ports: bench/RESULTS.md
# is rewritten, each section stamped with this revision, the CPU and how quiet the machine was.
# Run it on a quiet machine from a clean work tree; then quote the new figures in the README.
bench: install os-deps
	$(BIN)/python -m bench

# Each benchmark at tiny sizes (what the tests run): it still works; no claims, nothing written.
bench-smoke: install os-deps
	$(BIN)/python -m bench --smoke

docs: install
	$(BIN)/edgeml spec docs --out docs/spec.md

# The agent's gRPC modules, from the Open Inference Protocol's published .proto
grpc-gen: install
	PYTHON=$(BIN)/python scripts/gen_grpc.sh

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
