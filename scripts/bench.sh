#!/usr/bin/env bash
# The benchmark: pipeline vs the load limit of this machine, same file, BENCH_RUNS runs (3:
# min / median / max, and the targets judged on the median).
#   BENCH_ROWS=200000 make bench       (extra flags: BENCH_ARGS="--chunk-bytes N --parallel N")
#   make bench-fleet                   (scripts/bench.sh --fleet: 12 sources at once vs one job)
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/stack.sh env)"
exec target/release/etl-bench --rows "${BENCH_ROWS:-200000}" --runs "${BENCH_RUNS:-3}" ${BENCH_ARGS:-} "$@"
