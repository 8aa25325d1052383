#!/usr/bin/env bash
# Errors decided from the headers (401, 404, 413, 415; 405 with urllib) reach
# clients that write the whole body first (urllib) and curl (with and without
# "Expect: 100-continue"), for bodies of 100 KB, 5 MB and 30 MB; each answer
# carries Connection: close and the JSON error.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SIZES=(100000 5000000 30000000)
for n in "${SIZES[@]}"; do
  head -c "$n" /dev/zero >"$TMPD/body-$n"
done
TOKEN=tok-$RANDOM$RANDOM
printf '%s\n' "$TOKEN" >"$TMPD/token"

# curl_case STATUS CODE SIZE EXPECT(yes|no) URL...: curl receives the JSON error.
curl_case() {
  local status=$1 code=$2 n=$3 expect=$4; shift 4
  local args=(-s -o "$TMPD/out" -D "$TMPD/hdr" -w '%{http_code}' --data-binary @"$TMPD/body-$n")
  [ "$expect" = no ] && args+=(-H 'Expect:')
  local got
  got=$(curl "${args[@]}" "$@") || fail "curl $status $n expect=$expect: exit $?"
  [ "$got" = "$status" ] || fail "curl $status $n expect=$expect: got $got $(head -c 300 "$TMPD/out")"
  [ "$(json_get "$TMPD/out" 'j["error"]["code"]')" = "$code" ] || fail "curl body: $(cat "$TMPD/out")"
  grep -qi '^Connection: close' "$TMPD/hdr" || fail "curl $status $n: no Connection: close: $(cat "$TMPD/hdr")"
}

start_daemon early --api-token-file "$TMPD/token"
for n in "${SIZES[@]}"; do
  for e in yes no; do
    curl_case 401 unauthorized "$n" "$e" -H 'Content-Type: image/png' "$URL/v1/predict"
    curl_case 404 not_found "$n" "$e" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: image/png' "$URL/nope"
    curl_case 415 unsupported_media_type "$n" "$e" -H "Authorization: Bearer $TOKEN" \
      -H 'Content-Type: text/plain' "$URL/v1/predict"
  done
done
ok "curl (Expect: 100-continue and without) gets 401, 404, 415 for 100 KB, 5 MB, 30 MB"
for st in 401 404 405 415; do
  "$PY" "$ROOT/tests/integration/early.py" "$URL" "$TOKEN" "$st" "${SIZES[@]}" || fail "urllib $st"
done
# The connection still serves a normal request afterwards (the daemon is fine).
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$URL/v1/model")" = 200 ] \
  || fail "daemon not serving after the early answers"
stop_daemon "$PID" || fail "exit status"

start_daemon early413 --max-upload-bytes 65536
for n in "${SIZES[@]}"; do
  for e in yes no; do
    curl_case 413 payload_too_large "$n" "$e" -H 'Content-Type: image/png' "$URL/v1/predict"
  done
done
ok "curl gets 413 for 100 KB, 5 MB, 30 MB"
"$PY" "$ROOT/tests/integration/early.py" "$URL" "" 413 "${SIZES[@]}" || fail "urllib 413"
# Chunked upload past max_upload_bytes: read to the end, then 413.
got=$(curl -s -o "$TMPD/out" -w '%{http_code}' -H 'Transfer-Encoding: chunked' -H 'Content-Type: image/png' \
  --data-binary @"$TMPD/body-5000000" "$URL/v1/predict") || fail "chunked 413: curl exit $?"
[ "$got" = 413 ] || fail "chunked 413: $got"
[ "$(json_get "$TMPD/out" 'j["error"]["code"]')" = payload_too_large ] || fail "chunked 413 body"
ok "a chunked body over max_upload_bytes is read to its end, then 413"
stop_daemon "$PID" || fail "exit status"
