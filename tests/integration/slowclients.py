"""200 idle or byte-at-a-time connections held open against chexd (port in
argv[1], pid in argv[2]); a normal client must still be served and the
daemon's RSS must stay bounded. Prints a JSON summary."""
import json
import os
import socket
import sys
import threading
import time

from chexclient import accepted, predict, read, request

port, pid = int(sys.argv[1]), int(sys.argv[2])
N = 200
HOLD = 6.0  # seconds of normal requests while the connections are held


def rss_kb():
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])


rss0 = rss_kb()
socks = []
for i in range(N):
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    socks.append(s)
idle = socks[: N // 2]
slow = socks[N // 2:]
header = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000000\r\n\r\n"
stop = threading.Event()
sent = [0]


def dribble():
    """One byte per connection per round: headers, then the body, byte by byte."""
    pos = 0
    while not stop.is_set():
        for s in slow:
            b = header[pos:pos + 1] if pos < len(header) else b"\x00"
            try:
                s.send(b)
                sent[0] += 1
            except OSError:
                pass
        pos += 1
        time.sleep(0.05)


t = threading.Thread(target=dribble)
t.start()
# The daemon has accepted every connection (the kernel's backlog alone would
# hold them open too, proving nothing).
ports = {s.getsockname()[1] for s in socks}
deadline = time.time() + 120
while accepted(pid, ports) < N:
    assert time.time() < deadline, "chexd accepted %d of %d connections" % (accepted(pid, ports), N)
    time.sleep(0.05)
served = []
t0 = time.time()
while time.time() - t0 < HOLD:
    a = time.time()
    s1, _, _ = request(port, "GET", "/healthz", timeout=30)
    s2, _, b = predict(port, read("00000001_000.png"), timeout=60)
    served.append((s1, s2, round(time.time() - a, 2)))
    time.sleep(0.2)
rss_held = rss_kb()
stop.set()
t.join()
alive = 0
for s in socks:
    try:
        s.settimeout(0)
        d = s.recv(1)
        if d == b"":
            continue
        alive += 1
    except BlockingIOError:
        alive += 1
    except OSError:
        pass
for s in socks:
    s.close()
print(json.dumps({"connections": N, "still_open": alive, "served": served, "rss_kb_before": rss0,
                  "rss_kb_held": rss_held, "bytes_dribbled": sent[0]}))
