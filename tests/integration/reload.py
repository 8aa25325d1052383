"""Weights swapped under load. argv: PORT TOKEN PID SERVED A B BAD.
SERVED is the file the daemon serves; A and B two valid weight files (B is A
with other classifier biases); BAD a corrupt one. References: each file's
/v1/predict and /v2 infer answers on the same image, taken from the daemon
itself after a reload onto that file. Then 8 clients post continuously
(/v1/predict and /v2 infer alternately) while SERVED is replaced and reloaded
10 times, alternating A and B and alternating SIGHUP and POST
/v1/models/NAME/reload; each reload is waited for through GET /v1/models
(reloads counter), and the next one waits until clients have been answered
by the new weights. Every answer must be 200, name A's or B's sha256 and
carry that file's probabilities. A corrupt file then leaves the old weights
serving, with the error in /v1/models."""
import json
import os
import shutil
import signal
import sys
import threading
import time

import oipclient as oc
from chexclient import read, request

port, token, pid, served, fa, fb, fbad = sys.argv[1:8]
port, pid = int(port), int(pid)
base = "http://127.0.0.1:%d" % port
AUTH = {"Authorization": "Bearer " + token}
PNG = read("00000001_000.png")
TOL = 1e-5


def ok(msg):
    print("ok -", msg, flush=True)


def models():
    st, _, body = request(port, "GET", "/v1/models", headers=AUTH)
    assert st == 200, (st, body)
    return json.loads(body)["models"]


m0 = models()
assert len(m0) == 1 and len(m0[0]["versions"]) == 1, m0
NAME = m0[0]["name"]
LABELS = m0[0]["versions"][0]["labels"]


def version():
    return models()[0]["versions"][0]


def v1():
    st, h, body = request(port, "POST", "/v1/predict", PNG, dict(AUTH, **{"Content-Type": "image/png"}))
    if st != 200:
        return st, None, body
    j = json.loads(body)
    by = {p["label"]: p["probability"] for p in j["predictions"]}
    return st, j["model"]["sha256"], [by[l] for l in LABELS]


def v2():
    doc, tail = oc.images_binary([PNG])
    a = oc.infer(base, NAME, doc, tail, headers=AUTH)
    if a.status != 200:
        return a.status, None, a.body
    assert a.json["outputs"][0]["name"] == "probabilities", a.json
    return a.status, a.json["parameters"]["sha256"], a.outputs["probabilities"]


def install(src):
    """Replaces SERVED the way a deployment does: a new file renamed over it."""
    tmp = served + ".new"
    shutil.copyfile(src, tmp)
    os.replace(tmp, served)


def post_reload(headers=AUTH):
    st, _, body = request(port, "POST", "/v1/models/%s/reload" % NAME, b"", headers)
    return st, json.loads(body)


def reload_via(how, want_count):
    if how == "sighup":
        os.kill(pid, signal.SIGHUP)
    else:
        st, j = post_reload()
        assert st == 200 and j["versions"][0]["reloaded"], (st, j)
    deadline = time.monotonic() + 120
    while version()["reloads"] < want_count:
        assert time.monotonic() < deadline, "reload %d never happened" % want_count
        time.sleep(0.02)  # polling interval of the condition


# --- references and the reload route's answer
st, j = post_reload(headers={})
assert st == 401, (st, j)
ref = {}
count = version()["reloads"]
for f in (fb, fa):
    install(f)
    st, j = post_reload()
    count += 1
    assert st == 200 and j["model"] == NAME and j["versions"][0]["reloaded"], (st, j)
    sha = j["versions"][0]["sha256"]
    assert version()["sha256"] == sha and version()["error"] is None, version()
    a, b = v1(), v2()
    assert a[0] == 200 and b[0] == 200 and a[1] == sha and b[1] == sha, (a, b, sha)
    assert max(abs(x - y) for x, y in zip(a[2], b[2])) <= TOL, (a, b)
    ref[sha] = a[2]
assert len(ref) == 2, "A and B have the same sha256"
SHA_A, SHA_B = version()["sha256"], [s for s in ref if s != version()["sha256"]][0]
assert max(abs(x - y) for x, y in zip(ref[SHA_A], ref[SHA_B])) > 1e-3, "B's answers equal A's"
ok("POST /v1/models/%s/reload: 401 without the token; A and B answer with their own sha256 on /v1 and /v2" % NAME)

# --- 8 clients posting continuously through 10 reloads
stop = threading.Event()
lock = threading.Lock()
seen = {"answers": 0, "failed": [], "by_sha": {SHA_A: 0, SHA_B: 0}}


def client(i):
    k = i
    while not stop.is_set():
        try:
            st, sha, probs = (v1 if k % 2 == 0 else v2)()
        except Exception as e:  # a dropped connection is a failed request
            st, sha, probs = "exception", None, repr(e)
        k += 1
        with lock:
            seen["answers"] += 1
            if st != 200:
                seen["failed"].append((st, probs))
            elif sha not in ref:
                seen["failed"].append(("unknown sha256", sha))
            elif max(abs(x - y) for x, y in zip(probs, ref[sha])) > TOL:
                seen["failed"].append(("probabilities differ from %s's" % sha[:12], probs))
            else:
                seen["by_sha"][sha] += 1


threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
for t in threads:
    t.start()
t0 = time.monotonic()
for n in range(10):
    src, want = (fb, SHA_B) if n % 2 == 0 else (fa, SHA_A)
    with lock:
        before = seen["by_sha"][want]
    install(src)
    count += 1
    reload_via("sighup" if n % 2 == 0 else "post", count)
    assert version()["sha256"] == want, (n, version())
    # the new weights answer clients before the next swap
    deadline = time.monotonic() + 120
    while True:
        with lock:
            if seen["by_sha"][want] >= before + 4 or seen["failed"]:
                break
        assert time.monotonic() < deadline, "no answers from the new weights"
        time.sleep(0.02)
stop.set()
for t in threads:
    t.join()
assert not seen["failed"], seen["failed"][:5]
ok("8 clients through 10 reloads (SIGHUP and POST, A/B alternating, %.1f s): %d answers, 0 failed, "
   "each with A's or B's sha256 and that file's probabilities (A %d, B %d)"
   % (time.monotonic() - t0, seen["answers"], seen["by_sha"][SHA_A], seen["by_sha"][SHA_B]))

# --- a corrupt file leaves the old weights serving
now = version()["sha256"]
install(fbad)
st, j = post_reload()
assert st == 422 and j["error"]["code"] == "reload_failed", (st, j)
assert now in j["error"]["message"], j
v = version()
assert v["sha256"] == now and v["state"] == "ready" and v["error"], v
a = v1()
assert a[0] == 200 and a[1] == now, a
os.kill(pid, signal.SIGHUP)  # the same through SIGHUP: still the old weights
b = v2()
assert b[0] == 200 and b[1] == now, b
ok("corrupt file: POST reload 422 (%s), /v1/models shows the error, the old weights (%s...) still answer"
   % (v["error"][:70], now[:12]))
install(fa if now == SHA_B else fb)
count = version()["reloads"]
st, j = post_reload()
assert st == 200 and version()["error"] is None and version()["sha256"] != now, (st, j, version())
ok("a valid file after the corrupt one: reloaded, error cleared")

# --- the second copies' reservations went back to the memory budget
deadline = time.monotonic() + 30
while True:
    st, _, body = request(port, "GET", "/v1/model", headers=AUTH)
    held = json.loads(body)["memory"]["reserved_bytes"]
    if held == 0:
        break
    assert time.monotonic() < deadline, "%d bytes still reserved after the reloads" % held
    time.sleep(0.02)
ok("memory budget back to 0 bytes reserved after %d reloads" % version()["reloads"])
