#!/usr/bin/env bash
# Class activation maps through the real chexd and bin/chex: the maps of
# POST /v1/predict?cam=, the overlay of POST /v1/explain and the files of
# chex classify --cam against cam_driver's map (itself checked against torch by
# test_cam.sh), the label errors; then with api_token_file: explain needs the
# token, the page does not.
source "$(dirname "${BASH_SOURCE[0]}")/../integration/lib.sh"
BUILD=${BUILD:-build}
CC=${CC:-gcc}
make -s BUILD="$BUILD" BIN="$BIN" MODELS="$MODELS" "$BUILD/libchex_model.a" "$BUILD/libchex_pre.a"
$CC -O2 -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -fopenmp -I. -o "$TMPD/cam_driver" \
  tests/reference/cam_driver.c "$BUILD/libchex_model.a" "$BUILD/libchex_pre.a" \
  -lpng16 -ljpeg -lturbojpeg -lopenjp2 -lcharls -ljansson -lz -lm

start_daemon cam --threads 2
OMP_NUM_THREADS=2 "$PY" tests/reference/test_cam_api.py "$URL" "$TMPD/cam_driver" "$DEMO" "$TMPD" \
  "$CHEX" || { tail -20 "$LOG" >&2; fail "cam API checks"; }
# The issue's example, as a user types it.
curl -sf -F image=@tests/data/00000001_000.png "$URL/v1/explain?label=Cardiomegaly" \
  > "$TMPD/overlay.png" || fail "curl -F image=@... /v1/explain?label=Cardiomegaly failed"
"$PY" -c 'import sys; from PIL import Image; im = Image.open(sys.argv[1]); im.load(); \
assert im.format == "PNG" and im.size == (512, 512), im' "$TMPD/overlay.png" ||
  fail "curl's overlay.png is not a 512x512 PNG"
ok "curl -F image=@00000001_000.png /v1/explain?label=Cardiomegaly > overlay.png: a valid PNG"
stop_daemon "$PID" || true

echo "secret-$RANDOM" > "$TMPD/token"
start_daemon cam-token --threads 2 --api-token-file "$TMPD/token"
code=$(curl -s -o /dev/null -w '%{http_code}' -F image=@tests/data/00000001_000.png \
  "$URL/v1/explain?label=Cardiomegaly")
[ "$code" = 401 ] || fail "explain without the token: $code, not 401"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat "$TMPD/token")" \
  -F image=@tests/data/00000001_000.png "$URL/v1/explain?label=Cardiomegaly")
[ "$code" = 200 ] || fail "explain with the token: $code, not 200"
for page in / /index.html /app.js /style.css; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$URL$page")
  [ "$code" = 200 ] || fail "GET $page without the token: $code, not 200"
done
ok "api_token_file: explain needs the token (401/200), the page files do not"
stop_daemon "$PID" || true
