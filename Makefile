# Two entry points: `make up` runs the server, `make test` runs the whole suite.
# Both bootstrap a fresh Debian machine (as root) and are quick when already set up.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
INIT := src/cloche/_bin/cloche-init
STATE_CLIENT := src/cloche/_bin/cloche-state
GVISOR_COMPAT := src/cloche/_bin/libcloche-gvisor-compat.so
STATE_PY := src/cloche/_bin/cloche_state.py
APT_PACKAGES := runc runsc busybox-static e2fsprogs gcc libc6-dev python3-venv util-linux postgresql wrk nftables conntrack iproute2 dante-server chromium etcd-server
STAMP := .cloche-setup
E2B_JS := tests/e2b/js
PYTEST := $(VENV)/bin/pytest -q -p no:cacheprovider -p no:schemathesis --durations=20
# The suite runs in parallel (pytest-xdist, a module per worker: some modules' tests build on the ones before; the
# modules of each group in tests/conftest.py's TOGETHER share a worker; the longest start first, in LONGEST_FIRST's
# order), then the tests that need the host to themselves (tests/conftest.py's SERIAL) one at a time, then the leak
# check in a session of its own, once every other session's fixtures (servers, etcd, S3 of a whole session) are gone. Bytecode is cached for the run
# (PYTHONDONTWRITEBYTECODE cleared): every worker collects every test module, and pytest, not allowed to cache them,
# rewrites and compiles each one again in every process.
TEST_WORKERS ?= 4

.PHONY: up test bench lint setup bytecode clean

setup: $(STAMP)/apt $(STAMP)/venv $(STAMP)/e2b-js $(INIT) $(STATE_CLIENT) $(STATE_PY) $(GVISOR_COMPAT) bytecode

# cloche's own modules compiled to .pyc, as pip does for an installed package but not for
# this editable one: with PYTHONDONTWRITEBYTECODE set (containers often set it) every
# process would otherwise compile every one of them from source at each start. Only changed
# files are compiled again.
bytecode: $(STAMP)/venv
	@$(PY) -m compileall -q -j 0 src/cloche

$(STAMP)/apt: Makefile
	@mkdir -p $(STAMP)
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi
	@touch $@

$(STAMP)/venv: pyproject.toml
	@mkdir -p $(STAMP)
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# The official E2B JavaScript SDKs for tests/e2b/test_js_sdk.py, pinned by the lock file.
# They need node >= 20.18.1 (Debian 12's nodejs is 18): without it, they are left out
# and the test is skipped.
$(STAMP)/e2b-js: $(E2B_JS)/package.json $(E2B_JS)/package-lock.json
	@mkdir -p $(STAMP)
	@if node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a >= 22 || (a === 20 && b >= 18) ? 0 : 1)' 2>/dev/null; then \
		cd $(E2B_JS) && npm ci --no-audit --no-fund --loglevel=error && touch $(CURDIR)/$@; \
	else \
		echo "node >= 20.18.1 not found: the E2B JavaScript SDK tests will be skipped"; \
	fi

$(INIT): supervisor/cloche-init.c
	@mkdir -p $(dir $@)
	gcc -static -O2 -Wall -Wextra -Werror -o $@ $<

# The in-sandbox state clients (bound at /.cloche/bin with the rest of _bin/).
$(STATE_CLIENT): supervisor/cloche-state.c
	@mkdir -p $(dir $@)
	gcc -static -O2 -Wall -Wextra -Werror -o $@ $<

# Preloaded in gVisor sandboxes (/etc/ld.so.preload): see the file's comment.
$(GVISOR_COMPAT): supervisor/cloche-gvisor-compat.c
	@mkdir -p $(dir $@)
	gcc -shared -fPIC -nostdlib -O2 -Wall -Wextra -Werror -o $@ $<

$(STATE_PY): src/cloche/state/incontainer.py
	@mkdir -p $(dir $@)
	install -m 0644 $< $@

up: setup
	$(VENV)/bin/cloche up

test: setup
	$(VENV)/bin/ruff check src tests bench
	$(PY) -m tests.stale_runs
	dsn=$$(scripts/postgres-test.sh) && export CLOCHE_TEST_PG_DSN=$$dsn && \
	export PYTHONDONTWRITEBYTECODE= && \
	$(PYTEST) -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not serial" tests; parallel=$$?; \
	$(PYTEST) -m serial --ignore=tests/zz_leakcheck tests; serial=$$?; \
	$(PYTEST) tests/zz_leakcheck; leaks=$$?; \
	test $$parallel -eq 0 && test $$serial -eq 0 && test $$leaks -eq 0

bench: setup
	$(PY) bench/run.py

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

clean:
	rm -rf $(STAMP) $(VENV) src/cloche/_bin
