"""Concurrent clients for the integration tests and tools/bench_daemon.sh.

  loadgen.py inflight PORT PID N       N concurrent predicts, SIGTERM while they
                                       are in flight; prints a JSON summary
  loadgen.py overload PORT CLIENTS REQS  CLIENTS threads x REQS predicts each
  loadgen.py soak PORT PID TOTAL CLIENTS PREDICT_EVERY
  loadgen.py bench PORT CLIENTS REQS   throughput and latency percentiles
Every mode prints one JSON object on stdout."""
import json
import os
import signal
import sys
import threading
import time

from chexclient import multipart, png_gray, predict, read, request

PNG = read("00000001_000.png")


def classify_answer(status, headers, body):
    """Returns a short tag; raises on a malformed answer."""
    j = json.loads(body)
    if status == 200:
        assert len(j["predictions"]) == 14 and j["request_id"] == headers["x-request-id"], j
        return "200"
    assert set(j) == {"error", "request_id"} and j["error"]["code"] and j["error"]["message"], j
    if status == 503:
        assert headers.get("retry-after", "").isdigit(), headers
    return str(status)


def run_threads(n, fn):
    out = [None] * n
    ts = [threading.Thread(target=lambda i=i: out.__setitem__(i, fn(i))) for i in range(n)]
    for t in ts:
        t.start()
    return ts, out


def metric(port, name):
    s, h, b = request(port, "GET", "/metrics")
    for ln in b.decode().splitlines():
        if ln.startswith(name + " "):
            return float(ln.split()[1])
    return None


def one_predict(port, data=PNG):
    try:
        s, h, b = predict(port, data, timeout=300)
        return classify_answer(s, h, b)
    except Exception as e:  # noqa: BLE001 - every failure is reported
        return "fail:%s" % type(e).__name__


def inflight(port, pid, n):
    ts, out = run_threads(n, lambda i: one_predict(port))
    # Wait until every request reached the daemon (in flight), then SIGTERM.
    deadline = time.time() + 120
    while True:
        v = metric(port, "chexd_in_flight_requests")
        if v is not None and v - 1 >= n:
            break
        assert time.time() < deadline, "%s of %d requests in flight after 120 s" % (v, n)
        time.sleep(0.02)
    t0 = time.time()
    os.kill(pid, signal.SIGTERM)
    # The daemon stops accepting as it starts draining: poll until a new
    # connection is refused (with a deadline; the drain takes seconds).
    refused = False
    deadline = time.time() + 60
    while not refused and time.time() < deadline:
        try:
            request(port, "GET", "/healthz", timeout=5)
            time.sleep(0.02)
        except Exception:  # noqa: BLE001
            refused = True
    for t in ts:
        t.join()
    counts = {}
    for o in out:
        counts[o] = counts.get(o, 0) + 1
    print(json.dumps({"answers": counts, "new_connection_refused": refused,
                      "drain_s": round(time.time() - t0, 2)}))


def overload(port, clients, reqs):
    def client(i):
        tags = []
        for _ in range(reqs):
            tags.append(one_predict(port))
        return tags
    ts, out = run_threads(clients, client)
    for t in ts:
        t.join()
    counts = {}
    for tags in out:
        for o in tags:
            counts[o] = counts.get(o, 0) + 1
    print(json.dumps({"answers": counts}))


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0


def soak(port, pid, total, clients, every):
    tiny = png_gray(32, 32)
    bad = PNG[:2000]
    ct, mp = multipart([("f", "a.png", "image/png", PNG), ("f", "b.png", "image/png", tiny)])
    kinds = [
        ("GET", "/healthz", None, None, 200),
        ("GET", "/v1/model", None, None, 200),
        ("POST", "/v1/predict", bad, "image/png", 400),
        ("POST", "/v1/predict", tiny, "image/png", 422),
        ("GET", "/metrics", None, None, 200),
        ("POST", "/v1/predict", b"hello", "text/plain", 415),
        ("GET", "/missing", None, None, 404),
        ("POST", "/v1/predict", mp, ct, 422),
        ("GET", "/readyz", None, None, 200),
    ]
    lock = threading.Lock()
    state = {"next": 0, "fail": [], "done": 0, "predicts": 0}
    samples = []

    def client(_):
        while True:
            with lock:
                k = state["next"]
                if k >= total:
                    return
                state["next"] += 1
            try:
                if k % every == 0:
                    s, h, b = predict(port, PNG, timeout=300)
                    want = 200
                else:
                    m, path, body, ctype, want = kinds[k % len(kinds)]
                    s, h, b = request(port, m, path, body, {"Content-Type": ctype} if ctype else {}, timeout=300)
                if s != want:
                    raise AssertionError("%d for request %d, wanted %d: %r" % (s, k, want, b[:200]))
                if path_is_json(h):
                    json.loads(b)
            except Exception as e:  # noqa: BLE001
                with lock:
                    state["fail"].append(repr(e)[:300])
            with lock:
                state["done"] += 1
                if k % every == 0:
                    state["predicts"] += 1
                if state["done"] % max(1, total // 8) == 0:
                    samples.append(rss_kb(pid))

    def path_is_json(h):
        return h.get("content-type", "").startswith("application/json")

    t0 = time.time()
    ts, _ = run_threads(clients, client)
    for t in ts:
        t.join()
    samples.append(rss_kb(pid))
    print(json.dumps({"requests": state["done"], "predicts": state["predicts"], "failed": len(state["fail"]),
                      "first_failures": state["fail"][:3], "rss_kb": samples,
                      "seconds": round(time.time() - t0, 1)}))


def bench(port, clients, reqs):
    lat = []
    lock = threading.Lock()
    errors = [0]

    def client(_):
        for _ in range(reqs):
            t = time.perf_counter()
            s, h, b = predict(port, PNG, timeout=600)
            dt = time.perf_counter() - t
            with lock:
                if s == 200:
                    lat.append(dt)
                else:
                    errors[0] += 1
    t0 = time.perf_counter()
    ts, _ = run_threads(clients, client)
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()

    def pct(p):
        return lat[min(len(lat) - 1, max(0, int(round(p / 100.0 * len(lat) + 0.5)) - 1))] * 1e3 if lat else None
    print(json.dumps({"clients": clients, "requests": clients * reqs, "errors": errors[0],
                      "images_per_s": round(len(lat) / wall, 3), "p50_ms": round(pct(50), 1),
                      "p99_ms": round(pct(99), 1), "wall_s": round(wall, 2)}))


if __name__ == "__main__":
    mode = sys.argv[1]
    a = [int(x) for x in sys.argv[2:]]
    {"inflight": inflight, "overload": overload, "soak": soak, "bench": bench}[mode](*a)
