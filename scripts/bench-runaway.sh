#!/usr/bin/env bash
# The hostile input of the benchmark: one unclosed quote near the top of a ~1 GB object
# (`make bench-runaway`; RUNAWAY_MB=1024 by default). The job must fail in its plan with
# `record_too_large` after reading about one record limit past the quote, not the whole
# object, and the worker's peak RSS must stay far below the 256 MiB bound. Prints the job's
# time, the worker's peak RSS and the error; figures also in target/bench/runaway.json.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/stack.sh env)"
bin="$PWD/target/release"
dir="$PWD/target/bench"
mkdir -p "$dir"
megabytes="${RUNAWAY_MB:-1024}"
file="$dir/runaway-${megabytes}mb.csv"
uri="s3://catalog/bench-runaway/runaway-${megabytes}mb-$(date +%s).csv"

if [ ! -s "$file" ]; then
  echo "== writing $file: 10 rows, an unclosed quote, then ${megabytes} MB without a quote"
  python3 - "$file" "$megabytes" <<'PY'
import sys
path, megabytes = sys.argv[1], int(sys.argv[2])
with open(path, "w") as out:
    out.write("sku,name,product_url,price,currency\n")
    for i in range(10):
        out.write(f"RUN-{i},Item {i},https://shop.example/items/{i},1.00,EUR\n")
    out.write('RUN-10,"Unclosed name,https://shop.example/items/10,1.00,EUR\n')
    line = "".join(f"RUN-{i},Item {i},https://shop.example/items/{i},1.00,EUR\n" for i in range(11, 1011))
    target = megabytes << 20
    written = out.tell()
    while written < target:
        out.write(line)
        written += len(line)
PY
fi
echo "== uploading $(du -h "$file" | cut -f1) to $uri"
"$bin/etlctl" upload "$file" "$uri"

queue="bench-runaway-$$"
log="$dir/runaway-worker.log"
source scripts/worker.sh
start_worker "$log" ETL_TASK_QUEUE="$queue" ETL_METRICS_ADDR=

echo "== ingesting (the job must fail with record_too_large)"
started=$(date +%s.%N)
set +e
ETL_TASK_QUEUE="$queue" "$bin/etlctl" ingest "$uri" --source bench-runaway --wait --json \
  >"$dir/runaway-summary.json"
code=$?
set -e
finished=$(date +%s.%N)
rss_kib=$(awk '/^VmHWM/ {print $2}' "/proc/$worker/status")
python3 - "$dir/runaway-summary.json" "$code" "$started" "$finished" "$rss_kib" "$(stat -c %s "$file")" \
  "$dir/runaway.json" <<'PY'
import json, sys
summary_path, code, started, finished, rss_kib, size, out = sys.argv[1:]
summary = json.load(open(summary_path))
seconds = float(finished) - float(started)
report = {
    "object_bytes": int(size),
    "exit_code": int(code),
    "status": summary.get("status"),
    "error_type": summary.get("error_type"),
    "error": summary.get("error"),
    "seconds": round(seconds, 2),
    "worker_peak_rss_mib": round(int(rss_kib) / 1024, 1),
}
json.dump(report, open(out, "w"), indent=1)
print(json.dumps(report, indent=1))
if report["status"] != "failed" or report["error_type"] != "record_too_large":
    sys.exit("the job did not fail with record_too_large")
PY
