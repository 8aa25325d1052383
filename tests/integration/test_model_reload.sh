#!/usr/bin/env bash
# Weights swapped without dropping a request (reload.py): SIGHUP and POST
# /v1/models/NAME/reload under 8 continuous clients, 10 reloads alternating two
# weight files, 0 failed requests, each answer's sha256 the weights it ran on;
# a corrupt file keeps the old weights; a reload the memory budget cannot hold
# beside the weights in use is refused.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PYTHONPATH=$ROOT/tests/integration

# B: the demo weights with other classifier biases (another sha256, other
# probabilities); BAD: the demo file cut short.
"$PY" - "$DEMO" "$TMPD/b.safetensors" "$TMPD/bad.safetensors" <<'PY' || fail "weight files"
import json, struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
t = h["classifier.bias"]
assert t["dtype"] == "F32"
s, e = t["data_offsets"]
off = 8 + n + s
k = (e - s) // 4
bias = list(struct.unpack("<%df" % k, b[off:off + 4 * k]))
bias = [v + 0.25 * (i % 5) - 0.5 for i, v in enumerate(bias)]
b[off:off + 4 * k] = struct.pack("<%df" % k, *bias)
open(sys.argv[2], "wb").write(bytes(b))
open(sys.argv[3], "wb").write(bytes(b[: len(b) // 2]))
PY
cp "$DEMO" "$TMPD/served.safetensors"
printf 'reload-s3cret\n' >"$TMPD/token"
start_daemon reload --model "$TMPD/served.safetensors" --api-token-file "$TMPD/token" \
  --max-batch 4 --queue-depth 64
"$PY" "$ROOT/tests/integration/reload.py" "$PORT" reload-s3cret "$PID" "$TMPD/served.safetensors" \
  "$DEMO" "$TMPD/b.safetensors" "$TMPD/bad.safetensors" || { tail -30 "$LOG" >&2; fail "reload.py"; }
grep -q 'model reload failed: keeping the weights in force' "$LOG" || fail "the failed reload is not logged"
grep -q 'old weights freed' "$LOG" || fail "old weights never freed"
curl -s -H 'Authorization: Bearer reload-s3cret' "$URL/metrics" >"$TMPD/metrics"
grep -q 'chexd_requests_total{route="/v1/models/reload",status="200"}' "$TMPD/metrics" || fail "reloads not counted"
now=$(curl -s -H 'Authorization: Bearer reload-s3cret' "$URL/v1/models" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["models"][0]["versions"][0]["sha256"])')
grep -q "chexd_model_info{.*sha256=\"$now\"" "$TMPD/metrics" || fail "chexd_model_info does not name the weights in force ($now)"
ok "failed reload logged, old weights freed, reloads counted in /metrics, chexd_model_info names the weights in force"
stop_daemon "$PID" || fail "chexd did not exit 0 after the reloads"

# Memory: a limit that holds the weights in use but not a second copy beside
# them (what is resident at start + 16 MiB for connections + 24 MiB).
start_daemon measure --max-batch 1
res=$(curl -sf "$URL/v1/model" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["memory"]["resident_at_start_bytes"] >> 20)')
stop_daemon "$PID" || fail "exit status"
start_daemon tight --max-batch 1 --memory-limit-mb $((res + 16 + 24))
curl -s -X POST -o "$TMPD/tight.json" -w '%{http_code}' "$URL/v1/models/$(curl -sf "$URL/v1/model" \
  | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["name"])')/reload" >"$TMPD/tight.code"
"$PY" - "$(cat "$TMPD/tight.code")" "$TMPD/tight.json" <<'PY' || fail "memory refusal: $(cat "$TMPD/tight.json")"
import json, sys
j = json.load(open(sys.argv[2]))
assert sys.argv[1] == "503" and j["error"]["code"] == "memory_busy", (sys.argv[1], j)
assert "memory_limit_mb" in j["error"]["message"] and "beside the weights in use" in j["error"]["message"], j
PY
curl -sf "$URL/v1/models" | "$PY" -c '
import json, sys
v = json.load(sys.stdin)["models"][0]["versions"][0]
assert v["error"] and "memory_limit_mb" in v["error"] and v["reloads"] == 0, v'
curl -sf -o /dev/null -H 'Content-Type: image/png' --data-binary @"$DATA/00000001_000.png" "$URL/v1/predict" \
  || fail "predict after the refused reload"
ok "reload refused with 503 memory_busy when the second copy does not fit memory_limit_mb ($((res + 40)) MiB); the old weights serve"
stop_daemon "$PID" || fail "exit status"
