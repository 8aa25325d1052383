#!/usr/bin/env bash
# Inference workers side by side (config key workers): /v1/model reports
# them; concurrent singles and multiparts (with class activation maps) get
# the answers each gets alone, on 2 and on 3 workers (3 > threads: the third
# waits for a core); the memory budget's accounting is back to zero after.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for w in 2 3; do
  start_daemon "workers$w" --threads 2 --workers "$w" --max-batch 4 --log-level warn
  got=$(curl -s "$URL/v1/model" | "$PY" -c 'import json,sys; j=json.load(sys.stdin); print(j["workers"], j["max_batch"])')
  [ "$got" = "$w 4" ] || fail "/v1/model workers, max_batch: $got (wanted $w 4)"
  PYTHONPATH=$ROOT/tests/integration "$PY" "$ROOT/tests/integration/workers.py" "$PORT" 3 \
    || { tail -20 "$LOG" >&2; fail "workers.py with $w workers"; }
  wait_released "$w workers, after the requests"
  ok "$w workers: concurrent answers equal the answers alone; budget back to 0"
  stop_daemon "$PID" || fail "exit status"
done
# Default: a worker per thread (min(threads, max_batch)).
start_daemon workers_default --threads 2 --max-batch 1 --log-level warn
[ "$(curl -s "$URL/v1/model" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["workers"])')" = 1 ] \
  || fail "threads 2, max_batch 1: wanted 1 worker"
stop_daemon "$PID" || fail "exit status"
ok "workers 0 = min(threads, max_batch)"
