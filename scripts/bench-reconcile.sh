#!/usr/bin/env bash
# Reconcile's cost must not grow with other sources' history (`make bench-reconcile`): one
# job's `etlctl reconcile` is timed with nothing else in the tables, then again after
# RECONCILE_OTHERS (50) jobs of other sources have been ingested, in a database of its own
# (catalog_etl_reconcile_bench, Postgres and ClickHouse). Figures in
# target/bench/reconcile.json; the second median must be at most 1.5 times the first.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/stack.sh env)"
bin="$PWD/target/release"
dir="$PWD/target/bench"
mkdir -p "$dir"
rows="${RECONCILE_ROWS:-50000}"
others="${RECONCILE_OTHERS:-50}"
runs="${RECONCILE_RUNS:-5}"
database=catalog_etl_reconcile_bench

psql "${DATABASE_URL%/*}/postgres" -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)" \
  -c "CREATE DATABASE $database"
# The credentials reach curl on stdin, not on its command line.
printf 'user = "%s:%s"\n' "$CLICKHOUSE_USER" "$CLICKHOUSE_PASSWORD" |
  curl -sf -K - "$CLICKHOUSE_URL" --data-binary "DROP DATABASE IF EXISTS $database SYNC" >/dev/null
export DATABASE_URL="${DATABASE_URL%/*}/$database" CLICKHOUSE_DATABASE="$database"
export ETL_TASK_QUEUE="bench-reconcile-$$" ETL_METRICS_ADDR=
"$bin/etlctl" migrate

log="$dir/reconcile-worker.log"
source scripts/worker.sh
start_worker "$log"

stamp=$(date +%s)
ingest() { # source seed
  local uri="s3://catalog/bench-reconcile/$stamp/$1.csv"
  "$bin/etlctl" generate --rows "$rows" --seed "$2" --upload "$uri" >/dev/null
  "$bin/etlctl" ingest "$uri" --source "$1" --wait --json | python3 -c \
    'import json,sys; s=json.load(sys.stdin); assert s["status"]=="completed", s; print(s["job_id"])'
}
# Median seconds of $runs reconciles of the job; each must find both stores in agreement.
time_reconcile() {
  for _ in $(seq 1 "$runs"); do
    local started finished
    started=$(date +%s.%N)
    "$bin/etlctl" reconcile "$1" --json >"$dir/reconcile-last.json"
    finished=$(date +%s.%N)
    python3 -c 'import json,sys; assert json.load(open(sys.argv[1]))["ok"] is True' \
      "$dir/reconcile-last.json"
    python3 -c "print(round($finished - $started, 3))"
  done | sort -n | sed -n "$(((runs + 1) / 2))p"
}

echo "== the measured job: $rows rows of source reconcile-target"
job=$(ingest reconcile-target 1)
alone=$(time_reconcile "$job")
echo "   reconcile alone: median ${alone}s of $runs"
echo "== $others jobs of other sources, $rows rows each"
for i in $(seq 1 "$others"); do
  ingest "reconcile-other-$i" $((100 + i)) >/dev/null
done
crowded=$(time_reconcile "$job")
echo "   reconcile after them: median ${crowded}s of $runs"
python3 - "$alone" "$crowded" "$rows" "$others" "$dir/reconcile.json" <<'PY'
import json, sys
alone, crowded, rows, others, out = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
report = {"rows_per_job": rows, "other_jobs": others, "alone_seconds": alone,
          "with_history_seconds": crowded, "ratio": round(crowded / alone, 2)}
json.dump(report, open(out, "w"), indent=1)
print(json.dumps(report, indent=1))
if report["ratio"] > 1.5:
    sys.exit("reconcile slowed down with other sources' history")
PY
