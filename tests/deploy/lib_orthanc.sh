# tests/deploy/lib_orthanc.sh - shared by the Orthanc deploy tests (test_orthanc.sh,
# test_orthanc_tls.sh, test_orthanc_results.sh): root check, the private network and PID
# namespace, the temporary folder and its cleanup, starting, stopping and polling chexd
# and Orthanc (by PID).
#
# Use, at the top of a test (after `set -euo pipefail`):
#   self=$(readlink -f "${BASH_SOURCE[0]}")
#   . "$(dirname "$self")/lib_orthanc.sh"
#   orthanc_test_setup NAME "$self" "${1:-}" [EXTRA-TOOL...]
# Outside the namespace this checks root, bin/chexd, bin/chex, the demo model, Orthanc,
# orthanc-python and the tools, then re-executes the test inside `unshare -n -p
# --kill-child` (Orthanc 1.10 listens on every interface: nothing is reachable from
# outside; if the test dies, everything it started dies with it). Inside, it brings lo up,
# makes $tmp, and installs the EXIT trap (logs shown on failure, processes stopped).
# Defines: ROOT BIN MODELS PY MODEL tmp fail orth orth_at orth_code start_chexd stop_chexd
# launch_orthanc start_orthanc stop_orthanc wait_until; the test sets CHEXD_PORT, HTTP_PORT,
# DICOM_PORT, USER_PW, CHEXD_ARGS (chexd's arguments after --listen/--port/--model) and
# CHEXD_CA (curl's --cacert for an https chexd, empty for http).

orthanc_test_setup() { # NAME SELF FIRST-ARG [EXTRA-TOOL...]
  TEST_NAME=$1
  local self=$2 first=$3
  shift 3
  cd "$(dirname "$self")/../.."
  ROOT=$PWD
  BIN=${BIN:-bin}; MODELS=${MODELS:-models}; PY=${PY:-/usr/bin/python3}
  case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
  case $MODELS in /*) ;; *) MODELS=$ROOT/$MODELS ;; esac
  export BIN MODELS PY
  MODEL=$MODELS/chexnet-demo.safetensors
  if [ "$first" != --in-namespace ]; then
    [ "$(id -u)" -eq 0 ] || { echo "$TEST_NAME: needs root (unshare -n)" >&2; exit 1; }
    local f tool
    for f in "$BIN/chexd" "$BIN/chex" "$MODEL"; do
      [ -e "$f" ] || { echo "$TEST_NAME: $f missing (run make)" >&2; exit 1; }
    done
    for tool in Orthanc unshare ip curl "$@"; do
      command -v "$tool" >/dev/null ||
        { echo "$TEST_NAME: '$tool' missing (bash deploy/install-deps.sh --test)" >&2; exit 1; }
    done
    [ -e /usr/share/orthanc/plugins/libOrthancPython.so ] ||
      { echo "$TEST_NAME: orthanc-python missing (bash deploy/install-deps.sh --test)" >&2; exit 1; }
    exec unshare -n -p --kill-child bash "$self" --in-namespace
  fi
  ip link set lo up
  tmp=$(mktemp -d)
  chexd_pid= orthanc_pid= extra_pids=
  CHEXD_ARGS=() CHEXD_CA=
  trap orthanc_test_cleanup EXIT
}

orthanc_test_cleanup() {
  local rc=$? log pid
  if [ $rc -ne 0 ]; then
    for log in "$tmp"/*orthanc*.log; do
      [ -e "$log" ] || continue
      echo "--- $(basename "$log") (tail)" >&2; tail -n 40 "$log" >&2 || true
    done
    echo "--- chexd log (tail)" >&2; tail -n 20 "$tmp/chexd.log" >&2 2>/dev/null || true
  fi
  for pid in $orthanc_pid $extra_pids; do
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  done
  [ -n "$chexd_pid" ] && kill "$chexd_pid" 2>/dev/null && kill -CONT "$chexd_pid" 2>/dev/null &&
    wait "$chexd_pid" 2>/dev/null || true
  rm -rf "$tmp"
  return $rc
}

fail() { echo "$TEST_NAME: FAIL: $*" >&2; exit 1; }

start_chexd() { # starts bin/chexd with CHEXD_ARGS, waits for /readyz
  "$BIN/chexd" --listen 127.0.0.1 --port "$CHEXD_PORT" --model "$MODEL" "${CHEXD_ARGS[@]}" \
    >>"$tmp/chexd.log" 2>&1 &
  chexd_pid=$!
  local scheme=http _
  [ -n "$CHEXD_CA" ] && scheme=https
  for _ in $(seq 1 120); do
    [ "$(curl -s ${CHEXD_CA:+--cacert "$CHEXD_CA"} -o /dev/null -w '%{http_code}' \
         "$scheme://127.0.0.1:$CHEXD_PORT/readyz")" = 200 ] && return 0
    kill -0 "$chexd_pid" 2>/dev/null || fail "chexd exited at start"
    sleep 0.25
  done
  fail "chexd not ready after 30 s"
}
stop_chexd() { kill -TERM "$chexd_pid"; wait "$chexd_pid" || true; chexd_pid=; }

orth_at() { # PORT METHOD PATH [curl args...] -> body on stdout, fails on HTTP >= 400
  local port=$1 m=$2 p=$3; shift 3
  curl -fsS -u "$USER_PW" -X "$m" "http://127.0.0.1:$port$p" "$@"
}
orth() { orth_at "$HTTP_PORT" "$@"; }
orth_code() { # METHOD PATH -> HTTP status only
  curl -s -o /dev/null -w '%{http_code}' -u "$USER_PW" -X "$1" "http://127.0.0.1:$HTTP_PORT$2"
}

launch_orthanc() { # CONFIG PORT LOG: starts Orthanc, waits for its REST API; PID in launched_pid
  Orthanc "$1" >>"$3" 2>&1 &
  launched_pid=$!
  local _
  for _ in $(seq 1 120); do
    orth_at "$2" GET /system >/dev/null 2>&1 && return 0
    kill -0 "$launched_pid" 2>/dev/null || fail "Orthanc ($1) exited at start"
    sleep 0.25
  done
  fail "Orthanc ($1) REST not up after 30 s"
}
start_orthanc() { # CONFIG: the Orthanc under test, on HTTP_PORT, log $tmp/orthanc.log
  launch_orthanc "$1" "$HTTP_PORT" "$tmp/orthanc.log"
  orthanc_pid=$launched_pid
}
stop_orthanc() {
  local t0; t0=$(date +%s%N)
  kill -TERM "$orthanc_pid"; wait "$orthanc_pid" || fail "Orthanc exited non-zero on SIGTERM"; orthanc_pid=
  echo "$TEST_NAME: Orthanc stopped in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}

wait_until() { # TIMEOUT_S WHAT COMMAND...: polls COMMAND until it succeeds, fails at the deadline
  local end=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    [ $SECONDS -lt $end ] || fail "$what: not within the deadline"
    sleep 0.25
  done
}
