#!/usr/bin/env bash
# Security headers on the page and the API; 300 connections trickling their
# headers from 127.0.0.1 while 127.0.0.2 is served, closed by header_timeout_s;
# a body below min_upload_bytes_per_s is cut off; the default per-IP limit (64).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- headers
start_daemon headers
hdr() { curl -s -o /dev/null -D - "$@" | tr -d '\r'; }
has() { grep -qi "^$2" <<<"$1" || fail "$3: no '$2' in: $1"; }
for path in / /app.js /style.css; do
  h=$(hdr "$URL$path")
  has "$h" 'HTTP/1.1 200' "$path"
  has "$h" 'X-Content-Type-Options: nosniff' "$path"
  has "$h" 'Referrer-Policy: no-referrer' "$path"
  has "$h" "Content-Security-Policy: .*frame-ancestors 'none'" "$path"
  has "$h" "Content-Security-Policy: .*script-src 'self'" "$path"
  ! grep -qi 'unsafe-inline\|unsafe-eval' <<<"$h" || fail "$path: unsafe CSP: $h"
  ! grep -qi '^Strict-Transport-Security' <<<"$h" || fail "$path: HSTS without TLS"
done
ok "page files: nosniff, no-referrer, CSP without unsafe-inline, frame-ancestors 'none'"
h=$(hdr "$URL/v1/model")
for want in 'HTTP/1.1 200' 'X-Content-Type-Options: nosniff' 'Referrer-Policy: no-referrer' \
  'Cache-Control: no-store' "Content-Security-Policy: default-src 'none'; frame-ancestors 'none'"; do
  has "$h" "$want" /v1/model
done
h=$(hdr -H 'Content-Type: image/png' --data-binary @"$DATA/00000001_000.png" "$URL/v1/predict")
for want in 'HTTP/1.1 200' 'X-Content-Type-Options: nosniff' 'Referrer-Policy: no-referrer' \
  'Cache-Control: no-store' "Content-Security-Policy: default-src 'none'"; do
  has "$h" "$want" /v1/predict
done
h=$(hdr -H 'Content-Type: text/plain' --data-binary 'x' "$URL/v1/predict")
has "$h" 'HTTP/1.1 415' 'early 415'
has "$h" 'X-Content-Type-Options: nosniff' 'early 415'
has "$h" 'Connection: close' 'early 415'
ok "API answers (200 and errors): nosniff, no-referrer, no-store, CSP default-src 'none'"
stop_daemon "$PID" || fail "exit status"

# --- slowloris: header deadline 2 s, per-IP limit raised for the 300
start_daemon trickle --header-timeout-s 2 --connection-timeout-s 60 --per-ip-connection-limit 400
out=$("$PY" "$ROOT/tests/integration/trickle.py" "$PORT" 2 300)
echo "$out"
"$PY" - "$out" <<'PY' || fail "trickle: $out"
import json, sys
j = json.loads(sys.argv[1])
assert max(j["served_s"]) < 1.0, j            # 127.0.0.2 served within 1 s
assert j["open_while_served"] >= 290, j       # while the trickling connections were open
assert j["closed"] == j["connections"], j     # every one closed by the daemon
assert j["first_close_s"] >= 1.5, j           # by the deadline, not before
PY
grep -q 'past_header_timeout=' "$LOG" || fail "no log line for the closed connections"
ok "300 trickling connections: 127.0.0.2 served within 1 s, all closed by header_timeout_s"

# --- minimum upload rate: 1 KB/s body is cut off after the first 5 s
"$PY" - "$PORT" <<'PY' || fail "slow body not cut off"
import socket, sys, time
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port), timeout=30)
s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000000\r\n\r\n")
t0 = time.monotonic()
s.setblocking(False)
closed = None
while time.monotonic() - t0 < 30 and closed is None:
    try:
        s.send(b"\0" * 1024)
        if s.recv(1) == b"":
            closed = time.monotonic() - t0
    except BlockingIOError:
        pass
    except OSError:
        closed = time.monotonic() - t0
    time.sleep(1.0 if closed is None else 0)
assert closed is not None, "not closed within 30 s"
assert closed >= 4.5, closed
print("ok - a body at 1 KB/s was cut off after %.1f s (min_upload_bytes_per_s 16384)" % closed)
PY
stop_daemon "$PID" || fail "exit status"

# --- the default per-IP limit: 64 connections held open from 127.0.0.1, the
# 65th is closed without an answer while 127.0.0.2 is still served.
start_daemon perip
"$PY" - "$PORT" <<'PY' || fail "per-IP limit"
import socket, sys
port = int(sys.argv[1])
def connect(src):
    c = socket.socket()
    c.settimeout(10)
    c.bind((src, 0))
    c.connect(("127.0.0.1", port))
    return c
def get(c):
    c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        return c.recv(200)
    except ConnectionResetError:
        return b""
held = [connect("127.0.0.1") for _ in range(64)]
assert get(connect("127.0.0.1")) == b""
assert get(connect("127.0.0.2")).startswith(b"HTTP/1.1 200")
assert get(held[0]).startswith(b"HTTP/1.1 200")  # the held ones are real connections
held[0].close()
print("ok - per-IP limit 64 by default: the 65th connection from 127.0.0.1 refused, 127.0.0.2 served")
PY
stop_daemon "$PID" || fail "exit status"
