#!/usr/bin/env bash
# Runs the tests against the local stack (`make up`):
#   scripts/test.sh          every test: unit and end-to-end tests, then the fault-injection tests
#   scripts/test.sh faults   the fault-injection tests only (`make test-faults`)
#   scripts/test.sh soak     model-based scenarios from SOAK_SEED, SOAK_N of them, with faults
#                            unless SOAK_FAULTS=0, SOAK_AT_ONCE sources at a time (`make soak`)
#   scripts/test.sh record-histories   rewrite tests/histories from real runs (`make record-histories`)
# `make build` compiled everything once (release, `--all-targets`); the same profile and
# feature set here means cargo finds every artifact fresh and compiles nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/stack.sh env)"
export ETL_BIN_DIR="$PWD/target/release"

# The fault tests (and the model-based scenarios under faults) stop and restart shared services
# (Postgres, ClickHouse, Garage): they run after everything else, one at a time.
# `--workspace` like the run above, so cargo reuses its build (another crate selection would
# resolve other features and rebuild half the dependency tree).
run_faults() {
  cargo test --release --workspace -- --test-threads=1 faults:: model_based::chaos::
}

if [ "${1:-}" = faults ]; then
  run_faults
  exit
fi
if [ "${1:-}" = soak ]; then
  cargo test --release --workspace -- --ignored --exact --nocapture model_based::chaos::soak
  exit
fi
# Re-records tests/histories (after a deliberate workflow change, guarded with ctx.patched).
if [ "${1:-}" = record-histories ]; then
  cargo test --release --workspace -- --ignored --exact histories::record_histories
  exit
fi
status=0
# Each end-to-end test runs its own worker process; four at a time fit two cores.
cargo test --release --workspace --no-fail-fast -- --test-threads="${ETL_TEST_THREADS:-4}" \
  --skip faults:: --skip model_based::chaos:: || status=$?
run_faults || status=$?
exit "$status"
