# The README's commands. `make setup` once on a fresh Debian machine, then `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
WORLD  ?= var/world

.PHONY: setup test lint demo world proto bench clean

setup:            ## venv, the package with every extra and the dev tools, Debian packages the tests need
	PYTHON=$(PYTHON) VENV=$(VENV) scripts/setup.sh

test: lint        ## everything CI runs: ruff, mypy, the whole pytest suite
	$(BIN)/pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/bandit -q -r quasar gateway remix engines kvstore features -lll

demo:             ## build the demo world (first time ~15 s), serve it, rank member 42's feed, stop
	VENV=$(VENV) WORLD=$(WORLD) scripts/demo.sh

world:
	$(BIN)/quasar world build --out $(WORLD)

proto:            ## regenerate quasar/v1 from proto/
	PATH=$(abspath $(BIN)):$$PATH scripts/gen_proto.sh

bench:            ## GetFeed latency percentiles over gRPC with >= 500 candidates in the second pass
	$(BIN)/python benchmarks/feed_latency.py --world $(WORLD)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
