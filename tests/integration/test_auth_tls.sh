#!/usr/bin/env bash
# Bearer token (401 without / with a wrong token, 200 with it, health probes
# open) and HTTPS with a self-signed certificate made here.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
command -v openssl >/dev/null || fail "openssl is needed (deploy/packages/test.txt)"

TOKEN=s3cret-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n' "$TOKEN" >"$TMPD/token"
start_daemon auth --api-token-file "$TMPD/token"
png=$DATA/00000001_000.png
code() { curl -s -o "$TMPD/body" -w '%{http_code}' "$@"; }

for path in /healthz /readyz /v2/health/live /v2/health/ready; do
  [ "$(code "$URL$path")" = 200 ] || fail "$path should stay open: $(cat "$TMPD/body")"
done
ok "health probes need no token"
[ "$(code -H 'Content-Type: image/png' --data-binary @"$png" "$URL/v1/predict")" = 401 ] || fail "no token"
[ "$(json_get "$TMPD/body" 'j["error"]["code"]')" = unauthorized ] || fail "401 body: $(cat "$TMPD/body")"
[ "$(code -H "Authorization: Bearer ${TOKEN}x" -H 'Content-Type: image/png' --data-binary @"$png" "$URL/v1/predict")" = 401 ] || fail "longer token"
[ "$(code -H "Authorization: Bearer ${TOKEN%?}" -H 'Content-Type: image/png' --data-binary @"$png" "$URL/v1/predict")" = 401 ] || fail "shorter token"
[ "$(code -H "Authorization: Basic $TOKEN" "$URL/v1/model")" = 401 ] || fail "basic scheme"
[ "$(code "$URL/metrics")" = 401 ] || fail "metrics without token"
[ "$(code "$URL/v1/model")" = 401 ] || fail "model without token"
ok "401 without a token, with a wrong one, with another scheme"
[ "$(code -H "Authorization: Bearer $TOKEN" -H 'Content-Type: image/png' --data-binary @"$png" "$URL/v1/predict")" = 200 ] \
  || fail "with token: $(cat "$TMPD/body")"
[ "$(json_get "$TMPD/body" 'len(j["predictions"])')" = 14 ] || fail "answer"
[ "$(code -H "Authorization: Bearer $TOKEN" "$URL/metrics")" = 200 ] || fail "metrics with token"
grep -q 'status="401"' "$TMPD/body" || fail "401s not counted"
ok "200 with the token"
! grep -q "$TOKEN" "$LOG" || fail "the token appears in the log"
stop_daemon "$PID" || fail "exit status"

# TLS
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMPD/key.pem" -out "$TMPD/cert.pem" -days 2 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null || fail "openssl req"
SCHEME=https CURL_TLS="--cacert $TMPD/cert.pem" start_daemon tls \
  --tls-cert-file "$TMPD/cert.pem" --tls-key-file "$TMPD/key.pem"
[ "$(code --cacert "$TMPD/cert.pem" -H 'Content-Type: image/png' --data-binary @"$png" "$URL/v1/predict")" = 200 ] \
  || fail "https predict: $(cat "$TMPD/body")"
[ "$(json_get "$TMPD/body" 'j["input"]["format"]')" = png ] || fail "https answer"
[ "$(code --cacert "$TMPD/cert.pem" "$URL/nope")" = 404 ] || fail "https 404"
ok "HTTPS with a self-signed certificate and curl --cacert"
if curl -s -o /dev/null "$URL/healthz"; then fail "https without --cacert should not verify"; fi
if curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$PORT/healthz"; then
  fail "plain HTTP on the TLS port should fail"
fi
ok "unverified client and plain HTTP are refused"
stop_daemon "$PID" || fail "exit status"

# A TLS key that does not exist: exit 2 naming the key.
rc=0
"$CHEXD" --model "$DEMO" --port "$(free_port)" --tls-cert-file "$TMPD/cert.pem" \
  --tls-key-file "$TMPD/missing.pem" 2>"$TMPD/err" || rc=$?
[ "$rc" = 2 ] && grep -q tls_key_file "$TMPD/err" || fail "missing key: rc=$rc $(cat "$TMPD/err")"
ok "missing TLS key: exit 2 naming tls_key_file"
