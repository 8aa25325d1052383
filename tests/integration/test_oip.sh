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
curl -s -H 'Authorization: Bearer oip-s3cret' "$URL/metrics" \
  | grep -q 'chexd_requests_total{route="/v2/models/infer",status="200"}' || fail "infer not counted"
ok "/v2 infer requests counted in /metrics"
stop_daemon "$PID" || fail "chexd did not exit 0 on SIGTERM"
