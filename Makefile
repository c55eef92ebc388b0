# Local development stack and common tasks.
#   make up      install what is missing and start Temporal, Postgres, ClickHouse and Garage (S3)
#   make down    stop the services `make up` started (Postgres is left running)
#   eval "$$(make -s env)"   load the connection settings into your shell
SHELL := /bin/bash
MAKEFLAGS += --no-print-directory

.PHONY: deps up down status env build demo test bench

deps:
	bash scripts/stack.sh deps

up:
	bash scripts/stack.sh up
	cargo build --release -p client --bin etlctl
	eval "$$(bash scripts/stack.sh env)" && target/release/etlctl migrate

down:
	bash scripts/stack.sh down

status:
	bash scripts/stack.sh status

env:
	@bash scripts/stack.sh env

build: deps
	cargo build --release --workspace --bins
demo: up build
	bash scripts/demo.sh
test: up
	bash scripts/test.sh
bench: up build
	bash scripts/bench.sh
