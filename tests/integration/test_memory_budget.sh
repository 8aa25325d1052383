#!/usr/bin/env bash
# The memory budget (memory_limit_mb): hostile-but-valid images (all-zero
# 7071x7071 RGB 8-bit and RGBA 16-bit PNGs, a 7071x7071 JPEG, an interlaced
# 16-bit PNG just under max_image_pixels), with and without ?cam=, sent 8 at
# once to a daemon with memory_limit_mb 400: each is answered 200, 413 or 503
# (never a reset), the peak RSS (VmHWM) stays under 400 MB, /healthz polled
# every 100 ms with a 1 s timeout never misses, a normal radiograph gets 200
# afterwards. The budget's accounting is back to 0 after every kind of request:
# answered, 4xx, 503 (budget held by another upload), 504 and client gone
# mid-upload.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MH=$ROOT/tests/integration/memhostile.py

"$PY" "$MH" make "$TMPD"

# ASan keeps freed blocks in a quarantine (256 MB by default), which is RSS the
# budget cannot see: under make asan keep it small so VmHWM measures chexd.
if [ "${CHEX_ASAN:-0}" = 1 ]; then
  export ASAN_OPTIONS="${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}quarantine_size_mb=8:thread_local_quarantine_size_kb=256"
fi

start_daemon hostile --memory-limit-mb 400 --log-level warn
[ "$(metric chexd_memory_limit_bytes)" = $((400 << 20)) ] || fail "chexd_memory_limit_bytes: $(metric chexd_memory_limit_bytes)"
report=$("$PY" "$MH" storm "$PORT" "$PID" "$TMPD")
echo "$report" | "$PY" -c '
import json, sys
j = json.load(sys.stdin)
for r in j["results"]:
    print("   %-26s %d %s" % (r["image"], r["status"], r["code"]))
    if r["status"] not in (200, 413, 503):
        raise SystemExit("FAIL: %s answered %s (%s)" % (r["image"], r["status"], r["code"]))
    if r["status"] == 413 and r["code"] != "image_too_large":
        raise SystemExit("FAIL: 413 code %s" % r["code"])
    if r["status"] == 503 and not r.get("retry_after"):
        raise SystemExit("FAIL: 503 without Retry-After")
p = j["probes"]
print("   /healthz: %d probes, %d missed, slowest %.0f ms; VmHWM %.0f MB" % (
    p["sent"], p["missed"], p["worst_ms"], j["vmhwm_kb"] / 1024))
if p["missed"]:
    raise SystemExit("FAIL: /healthz missed %d of %d probes" % (p["missed"], p["sent"]))
if p["sent"] < 3:
    raise SystemExit("FAIL: too few probes")
if not 0 < j["vmhwm_kb"] <= 400 * 1024:
    raise SystemExit("FAIL: peak RSS %d kB over memory_limit_mb 400" % j["vmhwm_kb"])
' || fail "hostile uploads"
ok "8 hostile uploads at once: each 200/413/503, /healthz never missed, VmHWM <= 400 MB"
wait_released "after the hostile uploads"
ok "budget back to 0 after answered and refused hostile uploads"

code=$(curl -s -o "$TMPD/normal.json" -w '%{http_code}' -H 'Content-Type: image/png' \
  --data-binary @"$DATA/00000001_000.png" "$URL/v1/predict")
[ "$code" = 200 ] || fail "normal radiograph after the storm: $code $(cat "$TMPD/normal.json")"
wait_released "after a 200"
head -c 5000 "$DATA/00000001_000.png" > "$TMPD/trunc.png"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: image/png' \
  --data-binary @"$TMPD/trunc.png" "$URL/v1/predict")
[ "$code" = 400 ] || fail "truncated PNG: $code"
wait_released "after a 400"
# /v2 infer bodies are parsed on the worker after their scratch is reserved:
# a JSON (base64) 200, a malformed JSON 400 and an element that is no image
# (415 from its header probe) each give everything back.
PYTHONPATH=$ROOT/tests/integration "$PY" - "$URL" "$DATA/00000001_000.png" <<'PY' || fail "/v2 infer"
import json, sys, urllib.request
import oipclient as oc
base, png = sys.argv[1], open(sys.argv[2], "rb").read()
model = json.load(urllib.request.urlopen(base + "/v1/model"))["name"]
for doc, want in ((oc.images_json([png])[0], 200),
                  ({"inputs": [{"name": "image"}]}, 400),
                  (oc.images_json([b"not an image"])[0], 415)):
    a = oc.infer(base, model, doc)
    if a.status != want:
        raise SystemExit("FAIL: /v2 infer wanted %d, got %d %r" % (want, a.status, a.body[:200]))
PY
wait_released "after /v2 infer 200, 400 and 415"
"$PY" "$MH" gone "$PORT"
wait_released "after a client gone mid-upload"
in_flight=$(metric chexd_in_flight_requests)
[ "$in_flight" = 1 ] || fail "in flight after the client left: $in_flight (the /metrics request itself is 1)"
ok "normal radiograph 200 afterwards; budget back to 0 after 200, 400, /v2 infer (200, 400, 415) and a client gone mid-upload"
vm=$(awk '/^VmHWM:/ {print $2}' "/proc/$PID/status")
[ "$vm" -le $((400 * 1024)) ] || fail "VmHWM $vm kB over 400 MB at the end"
stop_daemon "$PID" || fail "exit status"

# A budget with room for one ~24 MiB upload: a second upload while the first
# holds it gets 503 memory_busy (connection_timeout_s 15 keeps the paused
# first upload open meanwhile, then lets it go); 504 (request_timeout_ms 1 with a 500 ms
# batch window) also gives everything back.
start_daemon probe --log-level warn
mb=$(curl -s "$URL/v1/model" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["memory"]["resident_at_start_bytes"] // 1048576 + 16 + 24)')
stop_daemon "$PID" || fail "exit status"
start_daemon small --memory-limit-mb "$mb" --request-timeout-ms 1 --batch-window-ms 500 \
  --connection-timeout-s 15 --log-level warn
row=$("$PY" "$MH" busy "$PORT" "$DATA/00000002_000.png")
echo "$row" | "$PY" -c '
import json, sys
j = json.load(sys.stdin)
if j["status"] != 503 or j["body"]["error"]["code"] != "memory_busy" or not j["retry_after"]:
    raise SystemExit("FAIL: wanted 503 memory_busy with Retry-After while %d bytes are held: %s" % (j["held"], j))
' || fail "503 while the budget is held"
wait_released "after a 503 and the holding client gone"
ok "503 memory_busy with Retry-After while another upload holds the budget; back to 0"
code=$(curl -s -o "$TMPD/504.json" -w '%{http_code}' -H 'Content-Type: image/png' \
  --data-binary @"$DATA/00000001_000.png" "$URL/v1/predict")
[ "$code" = 504 ] || fail "wanted 504, got $code: $(cat "$TMPD/504.json")"
wait_released "after a 504"
ok "504: budget back to 0"
stop_daemon "$PID" || fail "exit status"

# Too small a limit: chexd refuses to start and names the key.
rc=0
"$CHEXD" --model "$DEMO" --listen 127.0.0.1 --port "$(free_port)" --memory-limit-mb 40 \
  2>"$TMPD/small.err" || rc=$?
[ "$rc" = 2 ] || fail "memory_limit_mb 40: exit $rc"
grep -q "memory_limit_mb: 40 MiB is below" "$TMPD/small.err" || fail "message: $(cat "$TMPD/small.err")"
ok "memory_limit_mb below what the model and workspace take: exit 2 naming the key"
