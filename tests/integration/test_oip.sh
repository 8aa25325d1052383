#!/usr/bin/env bash
# The Open Inference Protocol (KServe v2) routes against the real daemon, with
# a client written from the protocol text (oipclient.py): JSON and binary data
# extension, 1 and 8 images equal to /v1/predict, FP32 tensor input from
# tests/reference's preprocess_driver, outputs selection, every error status.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
make -s BUILD="$BUILD" BIN="$BIN" "$BUILD/libchex_pre.a"
# Under make asan the library is instrumented: the driver links the runtimes.
san=()
[ "${CHEX_ASAN:-0}" = 1 ] && san=(-fsanitize=address,undefined)
${CC:-gcc} "${san[@]}" -O2 -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -fopenmp -I. -o "$TMPD/preprocess_driver" \
  tests/reference/preprocess_driver.c "$BUILD/libchex_pre.a" -lpng16 -ljpeg -lturbojpeg -lopenjp2 -lcharls -ljansson -lz -lm
printf 'oip-s3cret\n' >"$TMPD/token"
start_daemon oip --api-token-file "$TMPD/token" --max-upload-bytes 8388608
curl -sf -H 'Authorization: Bearer oip-s3cret' "$URL/v1/model" >"$TMPD/model.json"
read -r preset channels size mean std < <("$PY" - "$TMPD/model.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
i = m["input"]
f = lambda v: ",".join(repr(float(x)) for x in (v * 3)[:3])
print(m["preprocess"], i["channels"], i["size"], f(i["mean"]), f(i["std"]))
PY
)
"$TMPD/preprocess_driver" --mean "$mean" --std "$std" "$preset" "$channels" "$size" \
  "$DATA/00000001_000.png" "$TMPD/tensor.f32" >/dev/null
PYTHONPATH=$ROOT/tests/integration "$PY" "$ROOT/tests/integration/oip.py" "$URL" oip-s3cret \
  "$TMPD/tensor.f32" || { tail -20 "$LOG" >&2; fail "oip.py"; }
metrics=$(curl -s -H 'Authorization: Bearer oip-s3cret' "$URL/metrics")
grep -q 'chexd_requests_total{route="/v2/models/infer",status="200"}' <<<"$metrics" || fail "infer not counted"
ok "/v2 infer requests counted in /metrics"
stop_daemon "$PID" || fail "chexd did not exit 0 on SIGTERM"

# 503 under a full queue (oip_busy.py): queue_depth 1, max_batch 1 and the
# demo weights with the tencrop preset keep a 16-image /v1 request in the
# queue's one place for 15 forward passes; the daemon is killed afterwards.
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
start_daemon busy --model "$TMPD/tencrop.safetensors" --api-token-file "$TMPD/token" \
  --queue-depth 1 --max-batch 1 --batch-window-ms 0
name=$(curl -sf -H 'Authorization: Bearer oip-s3cret' "$URL/v1/model" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["name"])')
PYTHONPATH=$ROOT/tests/integration "$PY" "$ROOT/tests/integration/oip_busy.py" "$PORT" "$name" oip-s3cret \
  || { tail -20 "$LOG" >&2; fail "oip_busy.py"; }
{ kill -9 "$PID"; wait "$PID"; } 2>/dev/null || true
