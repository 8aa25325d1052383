"""503 on /v2: argv PORT MODEL TOKEN. The daemon runs with queue_depth 1,
max_batch 1 and a tencrop model: a /v1 request of 16 images holds the queue's
one place until the worker has taken its last image (15 forward passes of 10
crops later). Once /v2/health/ready reports the queue full (the condition
waited on), POST /v2/models/MODEL/infer must be refused with 503,
Retry-After and the protocol's {"error": "message"}."""
import json
import sys
import threading
import time

import oipclient as oc
from chexclient import multipart, read, request

port, model, token = int(sys.argv[1]), sys.argv[2], sys.argv[3]
base = "http://127.0.0.1:%d" % port
auth = {"Authorization": "Bearer " + token}
png = read("00000001_000.png")
ct, body = multipart([("f", "%d.png" % i, "image/png", png) for i in range(16)])
holder = {}


def hold():
    try:
        holder["status"] = request(port, "POST", "/v1/predict", body,
                                   dict(auth, **{"Content-Type": ct}), timeout=600)[0]
    except OSError as e:  # the daemon is killed once the 503 is seen
        holder["status"] = str(e)


threading.Thread(target=hold, daemon=True).start()
deadline = time.monotonic() + 60
while True:
    a = oc.call(base, "GET", "/v2/health/ready")
    if a.status == 503 and "queue full" in json.dumps(a.json):
        break
    assert "status" not in holder, ("the holding request ended first", holder)
    assert time.monotonic() < deadline, "the queue never filled"
    time.sleep(0.01)  # polling interval of the condition, not a synchronisation
doc, tail = oc.images_json([png])
a = oc.infer(base, model, doc, tail, headers=auth)
assert a.status == 503, (a.status, a.body)
assert a.headers.get("retry-after", "").isdigit() and int(a.headers["retry-after"]) >= 1, a.headers
assert a.headers["content-type"].startswith("application/json"), a.headers
assert list(a.json) == ["error"] and "queue full" in a.json["error"], a.json
doc, tail = oc.images_binary([png])
a = oc.infer(base, model, doc, tail, headers=auth)
assert a.status == 503 and list(a.json) == ["error"], (a.status, a.body)
print("ok - /v2 infer under a full queue: 503, Retry-After %s, %s" % (a.headers["retry-after"], a.body.decode()))
