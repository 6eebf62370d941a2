# The README's commands. `make setup` once on a fresh Debian machine, then `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
WORLD  ?= var/world

.PHONY: setup test lint demo world proto bench bench-workers bench-ray bench-overload bench-compare curves profile soak health-demo clean

setup:            ## venv, the package with every extra and the dev tools, Debian packages the tests need
	PYTHON=$(PYTHON) VENV=$(VENV) scripts/setup.sh

test: lint        ## everything CI runs: ruff, mypy, the whole pytest suite
	$(BIN)/pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/bandit -q -r quasar gateway remix engines kvstore features health -lll

demo:             ## build the demo world (first time ~15 s), serve it, rank member 42's feed, stop
	VENV=$(VENV) WORLD=$(WORLD) scripts/demo.sh

world:
	$(BIN)/quasar world build --out $(WORLD)

proto:            ## regenerate quasar/v1 from proto/
	PATH=$(abspath $(BIN)):$$PATH scripts/gen_proto.sh

bench:            ## GetFeed latency percentiles over gRPC with >= 500 candidates in the second pass
	$(BIN)/python benchmarks/feed_latency.py --world $(WORLD)

bench-workers:    ## throughput of --workers 1 against --workers N (h2load)
	$(BIN)/python benchmarks/workers_throughput.py --world $(WORLD)

bench-ray:        ## the feed served by Quasar against three Ray Serve deployments of it
	$(BIN)/python benchmarks/ray_serve_compare.py --world $(WORLD)

bench-overload:   ## a 3,000-call burst on one worker: the default overload settings, then the latency-first ones
	$(BIN)/python benchmarks/overload_burst.py --world $(WORLD)
	$(BIN)/python benchmarks/overload_burst.py --world $(WORLD) \
		--env QUASAR_OVERLOAD_MAX_PENDING_CALLS=1 --env QUASAR_OVERLOAD_MAX_ACTIVE_CALLS=1

soak:             ## 10 minutes at moderate load with 1% injected backend errors: RSS, fds, tasks
	$(BIN)/python benchmarks/soak.py --world $(WORLD)

BASE ?= HEAD~1
bench-compare:    ## in-process p50 of this checkout against git revision BASE, interleaved (make bench-compare BASE=abc123)
	$(BIN)/python benchmarks/compare_revisions.py --base $(BASE)

curves:           ## latency against offered load and against second-pass candidates: CSV + PNG in var/bench/curves
	$(BIN)/python benchmarks/latency_curves.py --world $(WORLD)

profile:          ## where an in-process request's time goes: py-spy flame graph var/bench/feed.svg
	mkdir -p var/bench
	$(BIN)/py-spy record -o var/bench/feed.svg -- $(BIN)/python benchmarks/profile_feed.py --world $(WORLD) --requests 2000

health-demo:      ## the health report on the demo world (a release, then a canary with one head moved): var/health, docs/health
	$(BIN)/python benchmarks/health_demo.py --world $(WORLD)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
