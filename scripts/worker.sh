# Sourced by the scripts that run a worker of their own (demo, benchmarks, screenshots).
# `start_worker LOG [NAME=VALUE ...]` starts "$bin/etl-worker" with that extra environment,
# logging to LOG, returns once it is ready (its pid in $worker) and stops it when the script
# exits; a script with more to clean up sets its own EXIT trap that calls `stop_worker`.

stop_worker() {
  kill "$worker" 2>/dev/null
  wait "$worker" 2>/dev/null || true
}

start_worker() {
  local log=$1
  shift
  env "$@" "${bin:?}/etl-worker" >"$log" 2>&1 &
  worker=$!
  trap stop_worker EXIT
  for _ in $(seq 1 600); do
    grep -q "etl-worker ready" "$log" && return 0
    kill -0 "$worker" 2>/dev/null || { echo "worker failed to start:"; cat "$log"; exit 1; }
    sleep 0.1
  done
  echo "worker not ready after 60 s; see $log"
  exit 1
}
