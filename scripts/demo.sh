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
"$bin/etl-worker" >"$log" 2>&1 &
worker=$!
trap 'kill "$worker" 2>/dev/null; wait "$worker" 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  grep -q "etl-worker ready" "$log" && break
  kill -0 "$worker" 2>/dev/null || { echo "worker failed to start:"; cat "$log"; exit 1; }
  sleep 0.1
done
grep -q "etl-worker ready" "$log" || { echo "worker not ready after 60 s; see $log"; exit 1; }
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
