# tests/integration/lib.sh - sourced by the integration tests: start the real
# bin/chexd on a free loopback port, wait for it, kill it on exit.
# Needs BIN, MODELS, BUILD, PY in the environment (tests/run_all.sh exports them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
BIN=${BIN:-bin}
MODELS=${MODELS:-models}
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
case $MODELS in /*) ;; *) MODELS=$ROOT/$MODELS ;; esac
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
CHEXD=$BIN/chexd
CHEX=$BIN/chex
DEMO=$MODELS/chexnet-demo.safetensors
DATA=$ROOT/tests/data
TMPD=$(mktemp -d "${TMPDIR:-/tmp}/chexd-it.XXXXXX")
PIDS=()

cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$TMPD"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok - $*"; }

# free_port: a port that was free a moment ago (the daemon start retries).
free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_daemon NAME [chexd flags...]: sets PORT, PID, LOG, URL. Serves the demo
# model unless the flags give --model-repository. Retries with
# another port when the chosen one was taken meanwhile.
start_daemon() {
  local name=$1; shift
  local try
  LOG=$TMPD/$name.log
  for try in 1 2 3 4 5; do
    PORT=$(free_port)
    local model=(--model "$DEMO") # model_repository is its alternative
    case " $* " in *" --model-repository "*) model=() ;; esac
    "$CHEXD" "${model[@]}" --listen 127.0.0.1 --port "$PORT" "$@" 2>"$LOG" &
    PID=$!
    PIDS+=("$PID")
    local i
    for i in $(seq 1 300); do
      if ! kill -0 "$PID" 2>/dev/null; then
        break
      fi
      if curl -s -o /dev/null ${CURL_TLS:-} "${SCHEME:-http}://127.0.0.1:$PORT/healthz"; then
        URL=${SCHEME:-http}://127.0.0.1:$PORT
        return 0
      fi
      sleep 0.1
    done
    if kill -0 "$PID" 2>/dev/null; then
      cat "$LOG" >&2
      fail "$name: chexd did not answer /healthz within 30 s"
    fi
    if ! grep -q 'Address already in use' "$LOG"; then
      cat "$LOG" >&2
      fail "$name: chexd exited at start-up"
    fi
  done
  fail "$name: no free port after 5 tries"
}

stop_daemon() { # PID: SIGTERM, wait, return its exit status
  local pid=$1 rc=0
  kill -TERM "$pid"
  wait "$pid" || rc=$?
  return $rc
}

# rss_kb PID
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# metric NAME: the value of an unlabelled /metrics line of the daemon at $URL.
metric() { curl -s "$URL/metrics" | awk -v k="$1" '$1 == k {print $2}'; }

# wait_released LABEL: the reservations are all given back (the condition is
# waited for, up to 60 s: completion callbacks run after the answer is sent,
# and libmicrohttpd notices a client that vanished mid-body at the latest at
# connection_timeout_s).
wait_released() {
  local i v
  for i in $(seq 1 600); do
    v=$(metric chexd_memory_reserved_bytes)
    [ "$v" = 0 ] && return 0
    sleep 0.1
  done
  fail "$1: the budget still holds $v bytes"
}

# json_get FILE PYEXPR: evaluates PYEXPR with j = the parsed JSON of FILE.
json_get() {
  "$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}
