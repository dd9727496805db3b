# The two set-up commands: `make up` runs the suite, `make test` runs the tests.
# Both bootstrap .venv and the generated code on a fresh machine and do nothing
# slow when that is already done.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
GENERATED := gen/.stamp
# The browser tests drive Debian's Chromium (no download at test time).
CHROMIUM := /usr/bin/chromium
PROTOS := $(shell find protos -name '*.proto')

.PHONY: setup up test bench lint gen clean

setup: $(INSTALLED) $(GENERATED)

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	# The generated protobuf modules live in gen/ (import name `loom`).
	echo "$(CURDIR)/gen" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/loom-gen.pth"
	touch $@

$(GENERATED): $(INSTALLED) $(PROTOS)
	$(PY) -m libs.codegen
	touch $@

gen: $(GENERATED)

$(CHROMIUM):
	$$(test $$(id -u) = 0 || echo sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $$(test $$(id -u) = 0 || echo sudo) apt-get install -y -qq chromium >/dev/null

up: setup
	$(VENV)/bin/loom up

test: setup $(CHROMIUM)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench $(BENCH_ARGS)

lint: setup
	cd protos && ../$(VENV)/bin/buf lint
	$(PY) -m libs.codegen --check
	$(VENV)/bin/ruff check
	$(VENV)/bin/mypy

clean:
	rm -rf gen $(VENV)
