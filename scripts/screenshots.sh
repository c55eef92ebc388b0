#!/usr/bin/env bash
# Regenerates the README's screenshots in docs/ from real runs on the local stack:
#   docs/webui-list.png, docs/webui-workflow.png   the Web UI test, in headless Chromium
#   docs/terminal-progress.png                     `etlctl ingest --wait` on a terminal, mid-run
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/stack.sh env)"
export ETL_BIN_DIR="$PWD/target/release"
bash scripts/stack.sh webui-deps
bin="$ETL_BIN_DIR"

ETL_SCREENSHOTS_DIR="$PWD/docs" cargo test --release --workspace -- --exact \
  observability::the_web_ui_lists_the_run_by_source_and_shows_its_summary

work=$(mktemp -d)
export ETL_TASK_QUEUE="screenshots-$$" ETL_METRICS_ADDR=""
source scripts/worker.sh
start_worker "$work/worker.log"
trap 'stop_worker; rm -rf "$work"' EXIT
uri="s3://catalog/screenshots/cotopaxi_$(date -u +%Y-%m-%dT%H-%M-%S).csv"
"$bin/etlctl" generate --rows 200000 --seed 2026 --upload "$uri" >/dev/null
script -qfec "stty cols 110 rows 12; '$bin/etlctl' ingest '$uri' --source cotopaxi --parallel 2 --chunk-bytes 2097152 --wait" \
  /dev/null >"$work/transcript.txt"
# The frame where the job was about two thirds done: bar, rows/s and ETA all showing.
python3 - "$work/transcript.txt" "$work/frame.txt" <<'PY'
import sys
text = open(sys.argv[1], encoding="utf-8", errors="replace", newline="").read()
frames = text.split("\r\x1b[2K")

def percent(frame):
    try:
        return float(frame.split("%")[0].split()[-1])
    except (IndexError, ValueError):
        return -1.0

pick = next((i for i, f in enumerate(frames) if "ETA" in f and percent(f) >= 60),
            len(frames) - 1)
command = "$ etlctl ingest s3://catalog/screenshots/cotopaxi.csv --source cotopaxi --wait\r\n"
open(sys.argv[2], "w", encoding="utf-8", newline="").write(command + "\r\x1b[2K".join(frames[: pick + 1]))
PY
(cd tests/webui && node terminal.mjs --input "$work/frame.txt" \
  --output "$PWD/../../docs/terminal-progress.png" --title "etlctl ingest --wait")
echo "screenshots written to docs/"
