#!/usr/bin/env bash
# Graceful shutdown with requests in flight, the shutdown deadline, and
# overload (queue_depth 1): every answer 200 or 503, none lost or malformed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PYTHONPATH=$ROOT/tests/integration

# The demo weights with the tencrop preset (10 forward passes per image) keep
# the worker slower than the uploads arrive, however fast the kernels get, so
# every request is in flight before SIGTERM in 1. and 2.
"$PY" - "$DEMO" "$TMPD/tencrop.safetensors" <<'PY' || fail "tencrop model"
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
h["__metadata__"]["preprocess"] = "tencrop"
hb = json.dumps(h).encode()
hb += b" " * (-len(hb) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
PY

# 1. SIGTERM with 6 requests in flight: all answered 200, exit 0, no new connections.
start_daemon drain --model "$TMPD/tencrop.safetensors" --max-batch 2 --batch-window-ms 20 --shutdown-timeout-ms 60000
t0=$SECONDS
out=$("$PY" "$ROOT/tests/integration/loadgen.py" inflight "$PORT" "$PID" 6)
echo "$out"
rc=0; wait "$PID" || rc=$?
[ "$rc" = 0 ] || fail "chexd exited $rc after SIGTERM"
"$PY" - "$out" <<'PY' || fail "drain: $out"
import json, sys
j = json.loads(sys.argv[1])
assert j["answers"] == {"200": 6}, j
assert j["new_connection_refused"], j
PY
grep -q 'msg=stopped' "$LOG" || fail "no 'stopped' line"
ok "SIGTERM with 6 requests in flight: all 6 answered 200, new connections refused, exit 0 ($((SECONDS - t0)) s)"

# 2. Deadline: 16 queued, max_batch 1, shutdown_timeout_ms 50: what never
#    started is answered 503 (not dropped), and the daemon exits 0 promptly.
start_daemon deadline --model "$TMPD/tencrop.safetensors" --max-batch 1 --batch-window-ms 0 \
  --shutdown-timeout-ms 50
t0=$SECONDS
out=$("$PY" "$ROOT/tests/integration/loadgen.py" inflight "$PORT" "$PID" 16)
echo "$out"
rc=0; wait "$PID" || rc=$?
[ "$rc" = 0 ] || fail "chexd exited $rc"
"$PY" - "$out" <<'PY' || fail "deadline: $out"
import json, sys
j = json.loads(sys.argv[1])
a = j["answers"]
assert sum(a.values()) == 16 and set(a) <= {"200", "503"} and a.get("503", 0) >= 1, j
assert j["drain_s"] < 15, j
PY
ok "shutdown deadline: every queued request answered (200 or 503), exit 0"

# 3. Overload: queue_depth 1, 16 clients x 2 requests.
start_daemon overload --queue-depth 1 --max-batch 1 --batch-window-ms 0
out=$("$PY" "$ROOT/tests/integration/loadgen.py" overload "$PORT" 16 2)
echo "$out"
"$PY" - "$out" <<'PY' || fail "overload: $out"
import json, sys
a = json.loads(sys.argv[1])["answers"]
assert sum(a.values()) == 32, a
assert set(a) <= {"200", "503"}, a
assert a.get("200", 0) >= 1 and a.get("503", 0) >= 1, a
PY
curl -s "$URL/metrics" | grep -q 'chexd_requests_total{route="/v1/predict",status="503"}' || fail "503 not counted"
ok "overload: 32 requests, each 200 or 503 with Retry-After, none lost"
stop_daemon "$PID" || fail "exit status"
