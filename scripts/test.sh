#!/usr/bin/env bash
# Runs every test: unit tests and the end-to-end tests against the local stack (`make up`).
# One build profile (release) serves tests, demo and bench, so a fresh machine builds once.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/stack.sh env)"
cargo build --release --workspace --bins
export ETL_BIN_DIR="$PWD/target/release"
# Each end-to-end test runs its own worker process; four at a time fit two cores.
cargo test --release --workspace --no-fail-fast -- --test-threads="${ETL_TEST_THREADS:-4}"
