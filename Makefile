# The two commands a fresh machine needs: `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test lint proto bench-gossip clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ringmesh demo

test: $(STAMP) lint
	$(BIN)/pytest

# Static checks (config in pyproject.toml), run first by `make test` and so by CI.
LINT_PATHS := ringmesh sim tests bench docs
lint: $(STAMP)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy

# Regenerate the committed protobuf/gRPC code (tests/shell/test_proto.py checks it is current).
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. proto/ringmesh/v1/mesh.proto

bench-gossip: $(STAMP)
	$(BIN)/python -m sim gossip --nodes 1000 --seed 1

clean:
	rm -rf $(VENV) build *.egg-info
