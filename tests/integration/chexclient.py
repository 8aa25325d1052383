"""tests/integration/chexclient.py - stdlib HTTP helpers for the chexd integration tests."""
import http.client
import json
import os
import socket
import struct
import uuid
import zlib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(ROOT, "tests", "data")


def read(name):
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


def accepted(pid, ports):
    """How many of the connections made from the local TCP ports `ports`
    the daemon (process pid) has accepted: its sockets (fd inodes) that are
    their far ends. One still in the listen backlog has no inode yet."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    n = 0
    for table in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, table)) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            col = row.split()
            if int(col[2].rsplit(":", 1)[1], 16) in ports and col[9] in inodes:
                n += 1
    return n


def request(port, method, path, body=None, headers=None, timeout=120, conn=None):
    """Returns (status, headers dict (lower-case names), body bytes)."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        if own:
            conn.close()


def predict(port, data, ctype="image/png", query="", headers=None, timeout=120):
    h = {"Content-Type": ctype}
    h.update(headers or {})
    return request(port, "POST", "/v1/predict" + query, data, h, timeout=timeout)


def multipart(files):
    """files: list of (field, filename, content_type, bytes). Returns (ctype, body)."""
    b = "chexd-" + uuid.uuid4().hex
    out = []
    for field, fname, ct, data in files:
        head = '--%s\r\nContent-Disposition: form-data; name="%s"' % (b, field)
        if fname is not None:
            head += '; filename="%s"' % fname
        head += "\r\n"
        if ct:
            head += "Content-Type: %s\r\n" % ct
        out.append(head.encode() + b"\r\n" + data + b"\r\n")
    out.append(("--%s--\r\n" % b).encode())
    return "multipart/form-data; boundary=" + b, b"".join(out)


def png_gray(w, h, fill=128):
    """A valid 8-bit grayscale PNG of w x h (for size-limit tests)."""
    raw = b"".join(b"\x00" + bytes([fill]) * w for _ in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def check_error(status, headers, body, want_status, want_code=None):
    """Asserts the error schema; returns the parsed body."""
    assert status == want_status, "status %d, wanted %d: %r" % (status, want_status, body[:300])
    j = json.loads(body)
    assert set(j) == {"error", "request_id"}, j
    assert set(j["error"]) == {"code", "message"}, j
    assert j["error"]["message"], j
    assert j["request_id"] == headers.get("x-request-id"), (j, headers)
    if want_code:
        assert j["error"]["code"] == want_code, j
    assert headers.get("content-type", "").startswith("application/json"), headers
    return j


def check_answer(j, labels, top=None, threshold=None):
    """Asserts the 200 schema of one image."""
    for k in ("request_id", "model", "predictions", "timing_ms", "input"):
        assert k in j, (k, j)
    assert set(j["model"]) == {"name", "sha256", "demo"}, j["model"]
    assert len(j["model"]["sha256"]) == 64
    if j["model"]["demo"]:
        assert j.get("demo") is True and "not a diagnosis" in j.get("warning", ""), j
    assert set(j["timing_ms"]) == {"decode", "preprocess", "queue", "inference"}, j["timing_ms"]
    for v in j["timing_ms"].values():
        assert v >= 0, j["timing_ms"]
    assert set(j["input"]) == {"format", "width", "height", "scaling"}, j["input"]
    preds = j["predictions"]
    for p in preds:
        assert 0.0 <= p["probability"] <= 1.0, p
        assert ("positive" in p) == (threshold is not None), p
        if threshold is not None:
            assert p["positive"] == (p["probability"] >= threshold), p
    if top is None:
        assert [p["label"] for p in preds] == labels, preds
    else:
        assert len(preds) == top, preds
        probs = [p["probability"] for p in preds]
        assert probs == sorted(probs, reverse=True), preds


def raw_socket(port, timeout=30):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return s


def read_http_response(s):
    """Reads one HTTP/1.1 response with Content-Length from a raw socket."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    n = int(hdrs.get("content-length", "0"))
    while len(rest) < n:
        d = s.recv(65536)
        if not d:
            break
        rest += d
    return status, hdrs, rest[:n]
