# Every target bootstraps its own virtual environment: a fresh machine needs only python3.
#
# `make test` lints once (ruff, mypy --strict), then runs the test suite on every CPython
# 3.10-3.13 this machine has (.ci/pythons finds them, pyenv not required): on $(PYTHON) with the
# branch-coverage gate, and on each other version in its own venv (.venv-3.X) without coverage,
# concurrently. Versions not found are named as skipped. The tools are pinned in constraints.txt.
PYTHON ?= python3
# Bytecode is cached (__pycache__, ignored by git): with PYTHONDONTWRITEBYTECODE set, as some
# CI images do, every process the tests start (CLI runs, workers, portals) compiled the whole
# package from source again, about 0.2 s of CPU each.
unexport PYTHONDONTWRITEBYTECODE
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
CONSTRAINTS := constraints.txt
PIP_INSTALL = python -m pip install -q -c $(CONSTRAINTS)

SUPPORTED := 3.10 3.11 3.12 3.13
COVER_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
FOUND := $(shell .ci/pythons)
# The other supported versions found; $(PYTHON)'s own version is tested in .venv, with coverage.
EXTRA := $(filter-out $(COVER_VERSION),$(FOUND))
SKIPPED := $(filter-out $(FOUND) $(COVER_VERSION),$(SUPPORTED))
EXTRA_STAMPS := $(foreach v,$(EXTRA),.venv-$(v)/.installed)

.PHONY: test test-slow test-loaded lint demo dist wheel-check bench bench-quick clean redis-server

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/$(PIP_INSTALL) -e '.[test,dev]'
	touch $(STAMP)

# The demo's own venv: the runtime dependencies only (no test toolchain), so that `make demo` on
# a fresh machine installs a few libraries, not mypy, ruff and hypothesis. When $(PYTHON) has a
# pip that can install into another environment (--python, pip >= 22.3), the venv is made
# without one of its own (ensurepip takes seconds); otherwise the venv's own pip is used.
# Modules are compiled as they are first imported, not all up front (--no-compile).
DEMO_VENV := .venv-demo
DEMO_STAMP := $(DEMO_VENV)/.installed
DEMO_PIP_OPTIONS := -q --disable-pip-version-check --no-compile
export HOST_PIP_CHECK := import pip, sys; sys.exit(tuple(map(int, pip.__version__.split(".")[:2])) < (22, 3))
$(DEMO_STAMP): pyproject.toml
	@if $(PYTHON) -c "$$HOST_PIP_CHECK" 2>/dev/null; then \
	    set -x; \
	    test -x $(DEMO_VENV)/bin/python || $(PYTHON) -m venv --without-pip $(DEMO_VENV); \
	    $(PYTHON) -m pip --python $(DEMO_VENV)/bin/python install $(DEMO_PIP_OPTIONS) -e .; \
	else \
	    set -x; \
	    test -x $(DEMO_VENV)/bin/python || $(PYTHON) -m venv $(DEMO_VENV); \
	    $(DEMO_VENV)/bin/python -m pip install $(DEMO_PIP_OPTIONS) -e .; \
	fi
	touch $(DEMO_STAMP)

# One venv per extra version, e.g. .venv-3.10/.installed.
.venv-%/.installed: pyproject.toml $(CONSTRAINTS)
	test -x .venv-$*/bin/python || "$$(.ci/pythons $*)" -m venv .venv-$*
	.venv-$*/bin/python -m pip install -q --upgrade pip
	.venv-$*/bin/$(PIP_INSTALL) -e '.[test]'
	touch $@

$(BENCH_STAMP): $(STAMP)
	$(BIN)/$(PIP_INSTALL) -e '.[test,bench]'
	touch $(BENCH_STAMP)

# The Redis tests start a real redis-server on a loopback port. Installed here when missing and
# root (apt-get); otherwise say how, and go on: those tests skip, except in CI (CI=true), where a
# missing redis-server fails.
redis-server:
	@if command -v redis-server >/dev/null 2>&1; then \
	    :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "redis-server is missing: installing it with apt-get"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server; \
	else \
	    echo "redis-server is missing: install it (e.g. 'sudo apt-get install redis-server');" \
	         "the Redis tests skip without it"; \
	    if [ "$${CI:-}" = true ]; then echo "CI=true: redis-server is required"; exit 1; fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict bitrix_images
	# The oldest supported version's typeshed too: what 3.10 lacks, or an ignore it does not need.
	$(BIN)/mypy --strict --python-version 3.10 bitrix_images
	$(BIN)/mypy --strict tests/typing

# The other versions' venvs are built while the code is linted (pip waits on the disk and the
# index as much as on the CPU; on a fresh clone this saves about a minute), each target's
# output kept together (-O).
test: redis-server
	@$(MAKE) --no-print-directory -j 4 -Otarget lint $(EXTRA_STAMPS)
	.ci/test-matrix "$(COVER_VERSION)" "$(EXTRA)" "$(SKIPPED)"

test-slow: $(STAMP)
	$(BIN)/pytest -W error -m slow

# No test may depend on the machine's speed: `make test` ten times in a row beside four
# CPU-burning processes (about 2.5 hours on 2 cores; stops at the first failure).
test-loaded:
	.ci/loaded-runs 10 4

demo: $(DEMO_STAMP)
	$(DEMO_VENV)/bin/bitrix-images mirror --demo ./demo-images
	@echo "the command is $(DEMO_VENV)/bin/bitrix-images (or: export PATH=\"$$PWD/$(DEMO_VENV)/bin:\$$PATH\"; to install it, see Install in README.md)"

# An sdist and a wheel in dist/ (python -m build, pinned in constraints.txt).
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

# The wheel as a user gets it: installed into a fresh venv with its runtime dependencies only,
# then `bitrix-images --version` and `mirror --demo` run from there, outside this checkout.
wheel-check: dist
	.ci/check-wheel "$(PYTHON)"

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks --only W8

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks --quick

clean:
	rm -rf $(VENV) $(DEMO_VENV) $(foreach v,$(SUPPORTED),.venv-$(v)) .test-logs dist
	rm -rf .pytest_cache .mypy_cache .ruff_cache .coverage demo-images
