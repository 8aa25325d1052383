#!/usr/bin/env bash
# Slow and idle clients: 200 connections held open (half idle, half sending a
# byte at a time) while a normal client is still served and memory stays
# bounded; the idle timeout closes a silent connection; the per-IP limit.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PYTHONPATH=$ROOT/tests/integration

# The connection timeout is far longer than the test: a slow run must not
# see the held connections expire.
start_daemon slow --connection-limit 400 --connection-timeout-s 600 --http-threads 4 \
  --per-ip-connection-limit 0 --header-timeout-s 0 --min-upload-bytes-per-s 0
out=$("$PY" "$ROOT/tests/integration/slowclients.py" "$PORT" "$PID")
echo "$out" | cut -c1-400
"$PY" - "$out" "${CHEX_ASAN:-0}" <<'PY' || fail "slow clients: $out"
import json, sys
j = json.loads(sys.argv[1])
asan = sys.argv[2] == "1"  # ASan's shadow memory and quarantine: a wider bound
assert j["served"] and all(s1 == 200 and s2 == 200 for s1, s2, _ in j["served"]), j["served"]
assert j["still_open"] >= 190, j["still_open"]  # they really were held open
assert j["rss_kb_held"] - j["rss_kb_before"] < (512 if asan else 96) * 1024, (j["rss_kb_before"], j["rss_kb_held"])
PY
ok "200 idle/byte-at-a-time connections held: normal client served, RSS bounded"
kill -0 "$PID" || fail "chexd died"
stop_daemon "$PID" || fail "exit status"

# Idle timeout on a small instance: closed by the daemon, never early.
start_daemon idle --connection-timeout-s 1
"$PY" - "$PORT" <<'PY' || fail "idle timeout"
import socket, sys, time
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port), timeout=60)
t0 = time.time()
assert s.recv(1) == b"", "idle connection not closed"
dt = time.time() - t0
assert 0.5 < dt < 30, dt
print("ok - idle connection closed after %.1f s" % dt)
PY
stop_daemon "$PID" || fail "exit status"

# Per-IP limit: once the daemon has accepted 4 connections (one HTTP thread:
# it counts each as it accepts it, before accepting the next; the timeout is
# far away), a 5th is refused; once they leave, a new one is served (polled:
# the daemon notices closes asynchronously).
start_daemon perip --connection-timeout-s 600 --per-ip-connection-limit 4 --http-threads 1 \
  --header-timeout-s 0
"$PY" - "$PORT" "$PID" <<'PY' || fail "per-IP limit"
import socket, sys, time
from chexclient import accepted
port, pid = int(sys.argv[1]), int(sys.argv[2])
held = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(4)]
ports = {h.getsockname()[1] for h in held}
deadline = time.time() + 60
while accepted(pid, ports) < 4:
    assert time.time() < deadline, "chexd accepted %d of 4 connections" % accepted(pid, ports)
    time.sleep(0.05)
extra = socket.create_connection(("127.0.0.1", port), timeout=60)
extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
try:
    d = extra.recv(100)
except ConnectionResetError:
    d = b""
assert d == b"", d  # refused: closed without an answer
extra.close()
for h in held:
    h.close()


def served():
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return s.recv(100).startswith(b"HTTP/1.1 200")
    except ConnectionResetError:
        return False
    finally:
        s.close()


deadline = time.time() + 60
while not served():
    assert time.time() < deadline, "not served within 60 s after the others left"
    time.sleep(0.05)
print("ok - per-IP limit: the 5th connection is closed, served again once others leave")
PY
stop_daemon "$PID" || fail "exit status"
