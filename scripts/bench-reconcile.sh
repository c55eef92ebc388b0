#!/usr/bin/env bash
# Reconcile's cost must not grow with history (`make bench-reconcile`), in a database of its own
# (catalog_etl_reconcile_bench, Postgres and ClickHouse):
# - other sources: one job's `etlctl reconcile` is timed with nothing else in the tables, then
#   again after RECONCILE_OTHERS (50) jobs of other sources;
# - its own source: a job's own end (busy check, copies, catalog comparison, delisting) must
#   cost what the running jobs cost, not the source's past. One source ingests a day's snapshot
#   RECONCILE_DAYS (365) times (the catalog alternates between two days, 3% changed, 1% gone,
#   1% new each day); its first days' jobs are timed against its last days'.
# Figures in target/bench/reconcile.json; each second median must be at most 1.5 times the
# first.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/stack.sh env)"
bin="$PWD/target/release"
dir="$PWD/target/bench"
mkdir -p "$dir"
rows="${RECONCILE_ROWS:-50000}"
others="${RECONCILE_OTHERS:-50}"
runs="${RECONCILE_RUNS:-5}"
days="${RECONCILE_DAYS:-365}"
day_rows="${RECONCILE_DAY_ROWS:-2000}"
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

echo "== $days days of one source, $day_rows rows a day"
# Seconds of one day's ingest of source reconcile-daily, end to end (`--wait`).
ingest_day() { # day
  local uri="s3://catalog/bench-reconcile/$stamp/daily/$1.csv" next=""
  [ $(($1 % 2)) -eq 0 ] && next=--next-day
  "$bin/etlctl" generate --rows "$day_rows" --seed 7 $next --upload "$uri" >/dev/null
  local started finished
  started=$(date +%s.%N)
  "$bin/etlctl" ingest "$uri" --source reconcile-daily --wait --json | python3 -c \
    'import json,sys; s=json.load(sys.stdin); assert s["status"]=="completed", s'
  finished=$(date +%s.%N)
  python3 -c "print(round($finished - $started, 3))"
}
median() { sort -n | sed -n "$((($1 + 1) / 2))p"; }
ingest_day 1 >/dev/null
first_days=$(for day in $(seq 2 $((runs + 1))); do ingest_day "$day"; done | median "$runs")
for day in $(seq $((runs + 2)) $((days - runs))); do ingest_day "$day" >/dev/null; done
last_days=$(for day in $(seq $((days - runs + 1)) "$days"); do ingest_day "$day"; done | median "$runs")
echo "   a day's job: median ${first_days}s on days 2..$((runs + 1)), ${last_days}s on the last $runs of $days"
python3 - "$alone" "$crowded" "$rows" "$others" "$first_days" "$last_days" "$days" "$day_rows" \
  "$dir/reconcile.json" <<'PY'
import json, sys
alone, crowded = float(sys.argv[1]), float(sys.argv[2])
rows, others = int(sys.argv[3]), int(sys.argv[4])
first_days, last_days, days, day_rows = float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
out = sys.argv[9]
report = {"rows_per_job": rows, "other_jobs": others, "alone_seconds": alone,
          "with_history_seconds": crowded, "ratio": round(crowded / alone, 2),
          "same_source_days": days, "rows_per_day": day_rows,
          "first_days_job_seconds": first_days, "last_days_job_seconds": last_days,
          "same_source_ratio": round(last_days / first_days, 2)}
json.dump(report, open(out, "w"), indent=1)
print(json.dumps(report, indent=1))
if report["ratio"] > 1.5:
    sys.exit("reconcile slowed down with other sources' history")
if report["same_source_ratio"] > 1.5:
    sys.exit("a job's end slowed down with its own source's history")
PY
