#!/usr/bin/env bash
# The main job end to end on the local stack: start a worker, upload a generated catalog CSV,
# ingest it, print the job summary and the Web UI link.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/stack.sh env)"
state="${ETL_STACK_DIR:-$HOME/.local/state/catalog-etl}"
mkdir -p "$state"
bin="$PWD/target/release"
uri="s3://catalog/cotopaxi/cotopaxi_2026-05-14T16-54-05.csv"
rows="${DEMO_ROWS:-20000}"

log="$state/demo-worker.log"
source scripts/worker.sh
start_worker "$log"
echo "== worker running (log: $log)"

echo "== uploading a generated catalog of $rows rows to $uri"
"$bin/etlctl" generate --rows "$rows" --seed 2026 --upload "$uri" --stats

echo "== ingesting"
"$bin/etlctl" ingest "$uri" --source cotopaxi --wait
echo
echo "== triggering the same object version again returns the same job (--json)"
"$bin/etlctl" ingest "$uri" --source cotopaxi --json
echo
echo "Temporal Web UI: ${TEMPORAL_UI_URL:-http://127.0.0.1:8233}"
