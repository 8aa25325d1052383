#!/usr/bin/env bash
# Slow and idle clients: 200 connections held open (half idle, half sending a
# byte at a time) while a normal client is still served and memory stays
# bounded; the idle timeout closes a silent connection; the per-IP limit.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PYTHONPATH=$ROOT/tests/integration

start_daemon slow --connection-limit 400 --connection-timeout-s 30 --http-threads 4 \
  --per-ip-connection-limit 0 --header-timeout-s 0 --min-upload-bytes-per-s 0
out=$("$PY" "$ROOT/tests/integration/slowclients.py" "$PORT" "$PID")
echo "$out" | cut -c1-400
"$PY" - "$out" "${CHEX_ASAN:-0}" <<'PY' || fail "slow clients: $out"
import json, sys
j = json.loads(sys.argv[1])
asan = sys.argv[2] == "1"  # ASan's shadow memory and quarantine: a wider bound
assert j["served"] and all(s1 == 200 and s2 == 200 for s1, s2, _ in j["served"]), j["served"]
assert max(t for _, _, t in j["served"]) < 20, j["served"]
assert j["still_open"] >= 190, j["still_open"]  # they really were held open
assert j["rss_kb_held"] - j["rss_kb_before"] < (512 if asan else 96) * 1024, (j["rss_kb_before"], j["rss_kb_held"])
PY
ok "200 idle/byte-at-a-time connections held: normal client served, RSS bounded"
kill -0 "$PID" || fail "chexd died"
stop_daemon "$PID" || fail "exit status"

# Idle timeout and per-IP limit on a small instance.
start_daemon idle --connection-timeout-s 1 --per-ip-connection-limit 4
"$PY" - "$PORT" <<'PY' || fail "idle timeout / per-IP limit"
import socket, sys, time
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port), timeout=10)
t0 = time.time()
assert s.recv(1) == b"", "idle connection not closed"
dt = time.time() - t0
assert 0.5 < dt < 5, dt
print("ok - idle connection closed after %.1f s" % dt)
held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
extra = socket.create_connection(("127.0.0.1", port), timeout=10)
extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
try:
    d = extra.recv(100)
except ConnectionResetError:
    d = b""
assert d == b"", d  # refused: closed without an answer
for h in held:
    h.close()
time.sleep(0.3)
ok = socket.create_connection(("127.0.0.1", port), timeout=10)
ok.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
assert ok.recv(100).startswith(b"HTTP/1.1 200"), "not served after the others left"
print("ok - per-IP limit: the 5th connection is closed, served again once others leave")
PY
stop_daemon "$PID" || fail "exit status"
