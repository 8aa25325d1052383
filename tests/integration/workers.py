"""Several inference workers (config key workers) side by side: answers that
ran on any worker, in any batch, next to other requests' images, equal the
same request sent alone; a multipart request's images are never split
between two workers at once, and class activation maps are read from the
workspace of the worker that ran the image.

  workers.py PORT ROUNDS"""
import json
import sys
import threading

from chexclient import multipart, predict, read

port, rounds = int(sys.argv[1]), int(sys.argv[2])
IMAGES = [("00000001_000.png", "image/png"), ("16747_3_1.jpg", "image/jpeg"),
          ("h0001.png", "image/png"), ("cr-mono1-10-chest.dcm", "application/dicom"),
          ("00000047_005.png", "image/png"), ("00013911_000.png", "image/png")]


def strip(j):
    """The answer without what differs between runs (ids, timings)."""
    j = dict(j)
    for k in ("request_id", "timing_ms"):
        j.pop(k, None)
    return j


def single(i):
    name, ct = IMAGES[i]
    s, h, b = predict(port, read(name), ct, "?cam=top&top=3")
    assert s == 200, (name, s, b[:300])
    return strip(json.loads(b))


def multi(order):
    ct, body = multipart([("image", IMAGES[i][0], IMAGES[i][1], read(IMAGES[i][0])) for i in order])
    s, h, b = predict(port, body, ct, "?cam=top&top=3")
    assert s == 200, (order, s, b[:300])
    return [strip(x) for x in json.loads(b)]


# Alone: one request at a time (each on an idle daemon).
ref = [single(i) for i in range(len(IMAGES))]
for r in ref:
    assert r["cam"]["png_base64"], r.keys()

# Together: singles and multiparts of 3 and 5 images, 12 at once, several rounds.
jobs = []
for k in range(12):
    if k % 3 == 0:
        order = [(k + j) % len(IMAGES) for j in range(5 if k % 2 else 3)]
        jobs.append(("multi", order))
    else:
        jobs.append(("single", [k % len(IMAGES)]))
errors = []


def run(job):
    kind, order = job
    try:
        got = multi(order) if kind == "multi" else [single(order[0])]
        for i, g in zip(order, got):
            if g != ref[i]:
                errors.append("%s %s image %s: %s != %s" % (kind, order, IMAGES[i][0],
                                                           json.dumps(g)[:200],
                                                           json.dumps(ref[i])[:200]))
    except Exception as e:  # noqa: BLE001 - reported below
        errors.append("%s %s: %r" % (kind, order, e))


for _ in range(rounds):
    ts = [threading.Thread(target=run, args=(j,)) for j in jobs]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
assert not errors, "\n".join(errors[:5])
print("ok %d concurrent requests per round x %d rounds equal the answers alone" % (len(jobs), rounds))
