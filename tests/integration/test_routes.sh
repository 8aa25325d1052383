#!/usr/bin/env bash
# Every route and every error status against the real daemon (demo model).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start_daemon routes --max-upload-bytes 4194304
PYTHONPATH=$ROOT/tests/integration "$PY" "$ROOT/tests/integration/routes.py" "$PORT" || { tail -20 "$LOG" >&2; fail "routes.py"; }

# The per-request log line: method, route, status, bytes, ms, request id.
grep -q 'msg=request method=POST route=/v1/predict status=200 bytes=[0-9]* ms=[0-9.]* request_id=' "$LOG" \
  || { tail -5 "$LOG" >&2; fail "no logfmt request line"; }
! grep -qi 'patient' "$LOG" || fail "the log mentions patient data"
ok "logfmt request lines on stderr"
stop_daemon "$PID" || fail "chexd did not exit 0 on SIGTERM"
ok "SIGTERM: exit 0"

# 504: requests that wait in the queue longer than request_timeout_ms.
start_daemon timeout --request-timeout-ms 1 --batch-window-ms 500 --log-format json
out=$TMPD/504.json
code=$(curl -s -o "$out" -w '%{http_code}' -H 'Content-Type: image/png' \
  --data-binary @"$DATA/00000001_000.png" "$URL/v1/predict")
[ "$code" = 504 ] || fail "wanted 504, got $code: $(cat "$out")"
[ "$(json_get "$out" 'j["error"]["code"]')" = timeout ] || fail "504 code: $(cat "$out")"
ok "504 when the request waits longer than request_timeout_ms"
curl -s "$URL/metrics" | grep -q 'chexd_requests_total{route="/v1/predict",status="504"} 1' || fail "504 not counted"
grep -q '"msg":"request","method":"POST","route":"/v1/predict","status":504' "$LOG" || { tail -3 "$LOG" >&2; fail "no JSON log line"; }
ok "JSON log lines"
stop_daemon "$PID" || fail "exit status"
