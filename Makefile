# Local development stack and common tasks.
#   make up      install what is missing and start Temporal, Postgres, ClickHouse and Garage (S3)
#   make down    stop the services `make up` started (Postgres is left running)
#   make test    every test (unit, end-to-end, then `make test-faults`)
#   make soak SEED=… N=…   N more model-based scenarios from seed SEED, under faults (FAULTS=0: none)
#   eval "$$(make -s env)"   load the connection settings into your shell
SHELL := /bin/bash
MAKEFLAGS += --no-print-directory

.PHONY: deps up down status env build demo test test-faults soak bench bench-fleet bench-rows bench-big bench-runaway bench-reconcile screenshots record-histories

deps:
	bash scripts/stack.sh deps

# One build serves everything: the binaries, the tests and the benchmark share one profile and
# one feature set (`--all-targets`), so `make test` and `make bench` compile nothing more.
build: deps
	cargo build --release --workspace --all-targets

up: build
	bash scripts/stack.sh up
	eval "$$(bash scripts/stack.sh env)" && target/release/etlctl migrate && target/release/etlctl setup

down:
	bash scripts/stack.sh down

status:
	bash scripts/stack.sh status

env:
	@bash scripts/stack.sh env

demo: up
	bash scripts/demo.sh
test: up
	bash scripts/test.sh
test-faults: up
	bash scripts/test.sh faults
# More model-based scenarios than `make test` runs: SEED (first seed, decimal or 0x hex;
# random if unset, and printed), N (how many, default 20), FAULTS (1: SIGKILLs, terminations,
# outages and one non-retryable error per scenario; 0: none) and AT_ONCE (sources at a time).
soak: up
	SOAK_SEED=$(SEED) SOAK_N=$${N:-20} SOAK_FAULTS=$${FAULTS:-1} SOAK_AT_ONCE=$(AT_ONCE) \
		bash scripts/test.sh soak
bench: up
	bash scripts/bench.sh
# A morning's fleet: 12 sources at once (10 catalogs of 20,000 rows, 2 hostile ones) on two
# workers, against one 200,000-row job on the same stack; every job checked exact.
bench-fleet: up
	bash scripts/bench.sh --fleet
# The worker's per-row stages alone (plan scan, parse and validate, hashes, digests), in CPU ns
# per row on the first day's file: no service needed (BENCH_ROWS, BENCH_RUNS: default 5).
bench-rows: build
	target/release/etl-bench --per-row --rows $${BENCH_ROWS:-200000} --runs $${BENCH_RUNS:-5}
# About 1 GB of CSV (1,450,000 rows of ~740 bytes): worker peak RSS with default settings.
bench-big: up
	BENCH_ROWS=$${BENCH_ROWS:-1450000} BENCH_RUNS=$${BENCH_RUNS:-1} bash scripts/bench.sh
bench-runaway: up
	bash scripts/bench-runaway.sh
bench-reconcile: up
	bash scripts/bench-reconcile.sh
# The README's screenshots (docs/*.png), from a real run in headless Chromium and a terminal.
screenshots: up
	bash scripts/screenshots.sh
# Workflow histories for the replay test (tests/histories), recorded from real runs.
record-histories: up
	bash scripts/test.sh record-histories
