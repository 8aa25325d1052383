#!/usr/bin/env bash
# SIGHUP rotates the API token and the TLS certificate without dropping
# connections (rotate.py); unusable files keep the old ones.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
command -v openssl >/dev/null || fail "openssl is needed (deploy/packages/test.txt)"
for n in 1 2; do
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMPD/key$n.pem" -out "$TMPD/cert$n.pem" \
    -days 2 -subj "/CN=127.0.0.1 rotation $n" -addext subjectAltName=IP:127.0.0.1 2>/dev/null \
    || fail "openssl req"
done
cp "$TMPD/cert1.pem" "$TMPD/cert.pem"
cp "$TMPD/key1.pem" "$TMPD/key.pem"
printf 'token-a-%s\n' "$RANDOM$RANDOM" >"$TMPD/token"
printf 'token-b-%s\n' "$RANDOM$RANDOM" >"$TMPD/tokenB"
SCHEME=https CURL_TLS="--cacert $TMPD/cert1.pem" start_daemon rotate \
  --tls-cert-file "$TMPD/cert.pem" --tls-key-file "$TMPD/key.pem" --api-token-file "$TMPD/token" \
  --min-upload-bytes-per-s 0 # the upload held open across SIGHUP may pause longer than 5 s
"$PY" "$ROOT/tests/integration/rotate.py" "$PORT" "$PID" "$LOG" "$TMPD" || { tail -20 "$LOG" >&2; fail "rotation"; }
kill -0 "$PID" || fail "chexd died"
! grep -q "$(cat "$TMPD/tokenB")" "$LOG" || fail "the token appears in the log"
stop_daemon "$PID" || fail "exit status"

# Plain HTTP with a token: SIGHUP rotates the token too.
printf 'token-c-%s\n' "$RANDOM$RANDOM" >"$TMPD/token"
start_daemon rotate-http --api-token-file "$TMPD/token"
code() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $1" "$URL/v1/model"; }
[ "$(code "$(cat "$TMPD/token")")" = 200 ] || fail "token c"
old=$(cat "$TMPD/token")
printf 'token-d-%s\n' "$RANDOM$RANDOM" >"$TMPD/token"
n0=$(grep -c 'reload: token read' "$LOG" || true)
kill -HUP "$PID"
for i in $(seq 1 300); do
  [ "$(grep -c 'reload: token read' "$LOG" || true)" -gt "$n0" ] && break
  sleep 0.1
done
[ "$(code "$old")" = 401 ] || fail "old token still accepted"
[ "$(code "$(cat "$TMPD/token")")" = 200 ] || fail "new token refused"
ok "plain HTTP: SIGHUP rotates the token"
stop_daemon "$PID" || fail "exit status"
