"""tests/integration/memhostile.py - hostile-but-valid images and the client
side of test_memory_budget.sh.

  memhostile.py make DIR            writes the images (all-zero, so they compress
                                    to a few hundred KB) into DIR
  memhostile.py storm PORT PID DIR  sends them 8 at once while /healthz is polled
                                    every 100 ms (1 s timeout); prints a JSON
                                    report (statuses, resets, probe misses, VmHWM)
  memhostile.py gone PORT           a client that sends part of a body and closes
  memhostile.py busy PORT FILE      holds almost all of the requests' budget with a
                                    half-sent upload, posts FILE (must get 503),
                                    then closes the upload; prints a JSON report
"""
import http.client
import io
import json
import os
import socket
import struct
import sys
import threading
import time
import zlib

SIDE = 7071  # 7071^2 = 49,999,041 pixels, just under max_image_pixels (50,000,000)


def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_zero(path, w, h, color_type, depth, interlaced=False):
    """An all-zero PNG written row by row (never the whole raw image in memory)."""
    chans = {0: 1, 2: 3, 6: 4}[color_type]
    bpp = chans * depth // 8
    comp = zlib.compressobj(9)
    idat = io.BytesIO()

    def rows(pw, ph):
        if pw == 0 or ph == 0:
            return
        row = bytes(1 + pw * bpp)
        for _ in range(ph):
            idat.write(comp.compress(row))

    if interlaced:  # Adam7 passes: (x0, y0, dx, dy)
        for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
                               (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)):
            rows((w - x0 + dx - 1) // dx, (h - y0 + dy - 1) // dy)
    else:
        rows(w, h)
    idat.write(comp.flush())
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1 if interlaced else 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat.getvalue()) +
                chunk(b"IEND", b""))


def jpeg_zero(path, w, h):
    from PIL import Image  # Debian's python3-pil
    Image.new("RGB", (w, h)).save(path, "JPEG", quality=50)


IMAGES = [("rgb8.png", "image/png"), ("rgba16.png", "image/png"), ("big.jpg", "image/jpeg"),
          ("gray16-adam7.png", "image/png")]


def make(d):
    png_zero(os.path.join(d, "rgb8.png"), SIDE, SIDE, 2, 8)
    png_zero(os.path.join(d, "rgba16.png"), SIDE, SIDE, 6, 16)
    jpeg_zero(os.path.join(d, "big.jpg"), SIDE, SIDE)
    png_zero(os.path.join(d, "gray16-adam7.png"), SIDE, SIDE, 0, 16, interlaced=True)


def vmhwm_kb(pid):
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def storm(port, pid, d):
    stop = threading.Event()
    probes = {"sent": 0, "missed": 0, "worst_ms": 0.0}

    def poll():
        while not stop.is_set():
            t = time.monotonic()
            probes["sent"] += 1
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
                c.request("GET", "/healthz")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status != 200:
                    probes["missed"] += 1
            except Exception:
                probes["missed"] += 1
            ms = (time.monotonic() - t) * 1e3
            probes["worst_ms"] = max(probes["worst_ms"], ms)
            stop.wait(max(0.0, 0.1 - ms / 1e3))

    bodies = []
    for name, ctype in IMAGES:
        with open(os.path.join(d, name), "rb") as f:
            bodies.append((name, ctype, f.read()))
    results = []
    lock = threading.Lock()
    go = threading.Barrier(8)

    def send(i):
        name, ctype, body = bodies[i % len(bodies)]
        query = "?cam=top" if i >= len(bodies) else ""
        go.wait()
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            c.request("POST", "/v1/predict" + query, body=body, headers={"Content-Type": ctype})
            r = c.getresponse()
            data = r.read()
            st = r.status
            code = ""
            if st != 200:
                try:
                    code = json.loads(data)["error"]["code"]
                except Exception:
                    code = "unparsable"
            retry = r.getheader("Retry-After")
            c.close()
            row = {"image": name + query, "status": st, "code": code, "retry_after": retry}
        except Exception as e:  # a reset or a closed connection
            row = {"image": name + query, "status": 0, "code": repr(e)}
        with lock:
            results.append(row)

    poller = threading.Thread(target=poll)
    poller.start()
    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    poller.join()
    print(json.dumps({"results": results, "probes": probes, "vmhwm_kb": vmhwm_kb(pid)}))


def gone(port):
    """Announces 4 MB, sends 1 MB, closes."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
              b"Content-Length: 4194304\r\n\r\n" + b"\x89PNG\r\n\x1a\n" + bytes(1 << 20))
    s.close()


def metric(port, name):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise SystemExit("no metric " + name)


def busy(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/v1/model")
    limit = json.loads(c.getresponse().read())["memory"]["requests_limit_bytes"]
    c.close()
    with open(path, "rb") as f:
        body = f.read()
    # The held upload leaves less room than the second body's first buffer.
    clen = limit - len(body) // 2
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
              b"Content-Length: %d\r\n\r\n" % clen)
    s.sendall(bytes(clen - 100))
    deadline = time.monotonic() + 60
    while metric(port, "chexd_memory_reserved_bytes") < clen:
        if time.monotonic() > deadline:
            raise SystemExit("the held upload never reserved its %d bytes" % clen)
        time.sleep(0.05)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("POST", "/v1/predict", body=body, headers={"Content-Type": "image/png"})
    r = c.getresponse()
    data = r.read()
    row = {"held": clen, "status": r.status, "retry_after": r.getheader("Retry-After"),
           "body": json.loads(data)}
    c.close()
    s.close()
    print(json.dumps(row))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    elif sys.argv[1] == "storm":
        storm(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "gone":
        gone(int(sys.argv[2]))
    elif sys.argv[1] == "busy":
        busy(int(sys.argv[2]), sys.argv[3])
