"""Slowloris against chexd (port in argv[1], header_timeout_s in argv[2]):
N connections from 127.0.0.1 send their request headers a byte at a time
and never finish them; meanwhile a client bound to 127.0.0.2 must be served
within 1 s, and every trickling connection must be closed by the daemon once
the header deadline has passed (and not long before it). Prints JSON."""
import json
import socket
import sys
import threading
import time

port, deadline_s = int(sys.argv[1]), float(sys.argv[2])
N = int(sys.argv[3]) if len(sys.argv) > 3 else 300
HEADER = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nX-Pad: " + b"a" * 4000

socks = []
t_open = time.monotonic()
for _ in range(N):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setblocking(False)
    socks.append(s)
closed_at = [None] * N
stop = threading.Event()


def trickle():
    pos = 0
    while not stop.is_set():
        for i, s in enumerate(socks):
            if closed_at[i] is not None:
                continue
            try:
                s.send(HEADER[pos % len(HEADER):pos % len(HEADER) + 1])
            except BlockingIOError:
                pass
            except OSError:
                closed_at[i] = time.monotonic()
                continue
            try:
                if s.recv(1) == b"":
                    closed_at[i] = time.monotonic()
            except BlockingIOError:
                pass
            except OSError:
                closed_at[i] = time.monotonic()
        pos += 1
        stop.wait(0.05)


th = threading.Thread(target=trickle)
th.start()


def served_from_other_address():
    """GET /v1/model from 127.0.0.2; seconds until the whole answer arrived."""
    t0 = time.monotonic()
    c = socket.socket()
    c.settimeout(10)
    c.bind(("127.0.0.2", 0))
    c.connect(("127.0.0.1", port))
    c.sendall(b"GET /v1/model HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        d = c.recv(65536)
        if not d:
            break
        data += d
    c.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    return time.monotonic() - t0


served = [served_from_other_address() for _ in range(5)]
open_while_served = sum(1 for c in closed_at if c is None)
# Wait (bounded) until every trickling connection is closed by the daemon.
limit = time.monotonic() + deadline_s + 20
while time.monotonic() < limit and any(c is None for c in closed_at):
    time.sleep(0.1)
stop.set()
th.join()
for s in socks:
    s.close()
closed = [c - t_open for c in closed_at if c is not None]
print(json.dumps({"connections": N, "served_s": [round(x, 3) for x in served],
                  "open_while_served": open_while_served, "closed": len(closed),
                  "first_close_s": round(min(closed), 2) if closed else None,
                  "last_close_s": round(max(closed), 2) if closed else None}))
