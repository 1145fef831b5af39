# The two commands of the README: `make demo` and `make test`. Both set up from scratch.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# The Node example client (clients/node) is set up only where node and npm exist.
NODE_INSTALLED := clients/node/node_modules/.installed
HAVE_NODE := $(and $(shell command -v node 2>/dev/null),$(shell command -v npm 2>/dev/null))

.PHONY: setup demo test test-all lint bench clean

$(INSTALLED): requirements.lock pyproject.toml setup.py $(wildcard protos/recsys/v1/*.proto)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	# Builds the gRPC stubs from protos/ (setup.py) and installs the `recsys` command.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps -e .
	touch $(INSTALLED)

$(NODE_INSTALLED): clients/node/package.json clients/node/package-lock.json
	npm ci --prefix clients/node --no-audit --no-fund
	touch $(NODE_INSTALLED)

setup: $(INSTALLED) $(if $(HAVE_NODE),$(NODE_INSTALLED))

demo: setup
	bash scripts/demo.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Every test but those marked slow, under 10 minutes on 2 cores; pytest prints the duration
# and the ten slowest.
test: lint
	$(BIN)/python -m pytest -q -m "not slow" --durations=10

test-all: lint
	$(BIN)/python -m pytest -q --durations=10

bench: setup
	$(BIN)/python bench/bench_nightly.py
	$(BIN)/python bench/bench_serving.py

clean:
	rm -rf $(VENV) clients/node/node_modules build *.egg-info protos/recsys/v1/*_pb2*.py protos/recsys/v1/*_pb2.pyi
