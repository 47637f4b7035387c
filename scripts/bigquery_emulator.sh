#!/usr/bin/env bash
# The local BigQuery emulator (PyPI `bqemulator`, REST API on DuckDB) that the BigQuery mirror
# of site_window_stats talks to in the demo and the tests.
#
# Usage: scripts/bigquery_emulator.sh start|stop|status [PORT]
#   PORT  REST port on 127.0.0.1 (default 9050); its gRPC port is picked free by the emulator.
#
# The emulator lives in a virtualenv of its own (its pins clash with the project's: duckdb
# 1.5.5 against 2.0.1), made once and cached in $BETLAKE_CACHE/bqemulator-<ver>-venv
# (default ~/.cache/betlake). bqemulator runs `INSTALL spatial` at start and refuses to start
# without it; DuckDB would download it, which is not possible here, so the spatial and avro
# extensions come from their PyPI packages and are installed into the DuckDB extension folder
# of a private home ($VENV/home/.duckdb), which the server runs with as its HOME.
#
# One emulator per port keeps its pid file, log and data (persistent DuckDB file) in
# ${BETLAKE_BIGQUERY_EMULATOR_HOME:-.betlake/bigquery}/<PORT>/. It starts detached, in a
# session of its own, with the default SIGINT/SIGTERM handling put back (a background job
# inherits them ignored), and `stop` sends SIGTERM to that pid (SIGKILL after 20 s).
# `status` exits 0 when the emulator answers on the port, 3 when it does not.
set -euo pipefail
cd "$(dirname "$0")/.."

BQEMULATOR_VERSION=1.4.0
DUCKDB_VERSION=1.5.5 # the emulator's engine; the extension packages must match it
NUMPY_VERSION=2.4.6  # duckdb needs numpy for the Python UDFs bqemulator registers

action=${1:-}
port=${2:-9050}
case "$action" in start | stop | status) ;; *)
  echo "usage: $0 start|stop|status [PORT]" >&2
  exit 2
  ;;
esac
if [[ ! "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
  echo "bigquery_emulator: bad port '$port'" >&2
  exit 2
fi

log() { echo "bigquery_emulator: $*" >&2; }

cache_root=${BETLAKE_CACHE:-$HOME/.cache/betlake}
venv="$cache_root/bqemulator-$BQEMULATOR_VERSION-venv"
state_root=${BETLAKE_BIGQUERY_EMULATOR_HOME:-.betlake/bigquery}
mkdir -p "$state_root"
state="$(cd "$state_root" && pwd)/$port"
pid_file="$state/emulator.pid"
log_file="$state/emulator.log"
url="http://127.0.0.1:$port"

answers() { # is a BigQuery emulator ready on the port?
  local py=python3
  [[ -x "$venv/bin/python" ]] && py="$venv/bin/python"
  "$py" - "$url/readyz" <<'EOF' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
    sys.exit(0 if response.status == 200 and b'"ok"' in response.read() else 1)
EOF
}

our_pid() { # the pid in the pid file, if that process is still our emulator
  [[ -f "$pid_file" ]] || return 1
  local pid
  pid=$(cat "$pid_file")
  [[ "$pid" =~ ^[0-9]+$ ]] && [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "bqemulator start --rest-host 127.0.0.1 --rest-port $port " ||
    return 1
  echo "$pid"
}

install() { # the emulator's virtualenv, made once (under a lock; a broken one is remade)
  [[ -f "$venv/.complete" ]] && return 0
  mkdir -p "$cache_root"
  exec 9>"$venv.lock"
  flock 9
  if [[ ! -f "$venv/.complete" ]]; then
    local python=${PYTHON:-python3.11} started=$SECONDS
    command -v "$python" >/dev/null || python=python3
    log "installing bqemulator $BQEMULATOR_VERSION into $venv ..."
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      "bqemulator==$BQEMULATOR_VERSION" "duckdb==$DUCKDB_VERSION" "numpy==$NUMPY_VERSION" \
      "duckdb-extension-spatial==$DUCKDB_VERSION" "duckdb-extension-avro==$DUCKDB_VERSION"
    mkdir -p "$venv/home"
    HOME="$venv/home" "$venv/bin/python" - <<'EOF'
import importlib.util
from pathlib import Path

import duckdb

con = duckdb.connect()
for name in ("spatial", "avro"):
    package = Path(importlib.util.find_spec(f"duckdb_extension_{name}").origin).parent
    (path,) = package.glob(f"extensions/v{duckdb.__version__}/{name}.duckdb_extension")
    con.execute(f"INSTALL '{path}'")  # copied into $HOME/.duckdb/extensions/<ver>/<platform>
    con.execute(f"LOAD {name}")
EOF
    touch "$venv/.complete"
    log "installed in $((SECONDS - started))s"
  fi
  exec 9>&-
}

start() {
  if pid=$(our_pid); then
    echo "bigquery emulator already running (pid $pid) on $url"
    return 0
  fi
  if answers; then
    log "something else already answers on $url; pick another port"
    return 1
  fi
  install
  mkdir -p "$state/data"
  rm -f "$pid_file"
  # A Python launcher: own session, default stop signals, then exec the emulator (same pid).
  HOME="$venv/home" "$venv/bin/python" -c '
import os, signal, sys
try:
    os.setsid()
except OSError:
    pass
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
    signal.signal(sig, signal.SIG_DFL)
os.execv(sys.argv[1], sys.argv[1:])
' "$venv/bin/python" -m bqemulator start --rest-host 127.0.0.1 --rest-port "$port" \
    --grpc-host 127.0.0.1 --grpc-port 0 --persistent --data-dir "$state/data" \
    --project "${BETLAKE_BIGQUERY_PROJECT:-betlake-local}" --log-level warning \
    --log-format console </dev/null >"$log_file" 2>&1 &
  local pid=$! started=$SECONDS
  echo "$pid" >"$pid_file"
  until answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "the emulator exited during start; the end of $log_file:"
      tail -n 20 "$log_file" >&2
      rm -f "$pid_file"
      return 1
    fi
    if ((SECONDS - started > 90)); then
      log "no answer on $url after 90s; stopping it (log: $log_file)"
      stop >/dev/null
      return 1
    fi
    sleep 0.3
  done
  echo "bigquery emulator running (pid $pid) on $url, log $log_file"
}

stop() {
  local pid
  if ! pid=$(our_pid); then
    rm -f "$pid_file"
    echo "bigquery emulator not running on port $port"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 80); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid still alive after 20s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
  echo "bigquery emulator stopped (pid $pid)"
}

status() {
  local pid
  if pid=$(our_pid) && answers; then
    echo "bigquery emulator running (pid $pid) on $url"
    return 0
  fi
  echo "bigquery emulator not running on port $port"
  return 3
}

"$action"
