"""Every route and every error status of a running chexd (port in argv[1]).
argv[2] is the request_timeout_ms of that instance (the 504 check needs a
second instance; see test_routes.sh)."""
import http.client
import json
import sys
import time

from chexclient import (check_answer, check_error, multipart, png_gray, predict, read, request)

port = int(sys.argv[1])


def ok(msg):
    print("ok -", msg, flush=True)


# --- GET routes
for path in ("/healthz", "/v2/health/live"):
    s, h, b = request(port, "GET", path)
    assert s == 200 and json.loads(b)["status"] == "ok", (path, s, b)
    assert h.get("x-request-id"), h
for path in ("/readyz", "/v2/health/ready"):
    s, h, b = request(port, "GET", path)
    assert s == 200 and json.loads(b)["status"] == "ready", (path, s, b)
ok("healthz, readyz and the /v2/health aliases answer 200")

s, h, b = request(port, "GET", "/v1/model")
assert s == 200, (s, b)
model = json.loads(b)
labels = model["labels"]
assert model["architecture"] == "densenet121", model
assert len(labels) == 14 and labels[0] == "Atelectasis", labels
assert model["input"]["size"] == 224 and model["input"]["channels"] in (1, 3), model
for k in ("name", "preprocess", "sha256", "demo", "threads", "max_batch"):
    assert k in model, (k, model)
assert model["demo"] is True and model["max_batch"] >= 1 and model["threads"] >= 1, model
ok("GET /v1/model: %s, %d labels, preset %s" % (model["name"], len(labels), model["preprocess"]))

s, h, b = request(port, "HEAD", "/healthz")
assert s == 200 and b == b"", (s, b)
ok("HEAD /healthz")

# --- predict, raw bodies of each format
answers = {}
for name, ct, fmt in (("00000001_000.png", "image/png", "png"),
                      ("16747_3_1.jpg", "image/jpeg", "jpeg"),
                      ("cr-mono1-10-chest.dcm", "application/dicom", "dicom"),
                      ("h0001.png", "application/octet-stream", "png")):
    s, h, b = predict(port, read(name), ct)
    assert s == 200, (name, s, b[:300])
    assert h["content-type"].startswith("application/json"), h
    j = json.loads(b)
    check_answer(j, labels)
    assert j["request_id"] == h["x-request-id"], (j["request_id"], h)
    assert j["input"]["format"] == fmt, j["input"]
    if fmt == "dicom":
        d = j["dicom"]
        assert d["modality"] == "CR" and d["sop_instance_uid"], d
        for k in d:
            assert "patient" not in k.lower(), d
        assert "Patient" not in b.decode(), b
    else:
        assert "dicom" not in j, j
    answers[name] = j
ok("POST /v1/predict: PNG, JPEG, DICOM and octet-stream answer 200 with the schema")

j0 = answers["00000001_000.png"]
s, h, b = predict(port, read("00000001_000.png"), "image/png", "?top=3&threshold=0.5")
assert s == 200, (s, b)
j = json.loads(b)
check_answer(j, labels, top=3, threshold=0.5)
full = {p["label"]: p["probability"] for p in j0["predictions"]}
best = sorted(full.items(), key=lambda kv: -kv[1])[:3]
assert [p["label"] for p in j["predictions"]] == [k for k, _ in best], (j["predictions"], best)
for p in j["predictions"]:
    assert abs(p["probability"] - full[p["label"]]) < 1e-6, (p, full)
ok("?top=3&threshold=0.5 keeps the 3 most probable, sorted, with positive flags")

s, h, b = predict(port, read("00000001_000.png"), "image/png", "", {"X-Request-Id": "trace-42.a_b"})
assert s == 200 and h["x-request-id"] == "trace-42.a_b" and json.loads(b)["request_id"] == "trace-42.a_b"
s, h, b = predict(port, read("00000001_000.png"), "image/png", "", {"X-Request-Id": "bad id\"<>"})
assert s == 200 and h["x-request-id"] != "bad id\"<>" and len(h["x-request-id"]) == 16, h
ok("X-Request-Id: a safe client id is echoed, an unsafe one replaced")

# Same image twice gives the same probabilities (deterministic pipeline).
s, h, b = predict(port, read("00000001_000.png"))
assert [p["probability"] for p in json.loads(b)["predictions"]] == [p["probability"] for p in j0["predictions"]]
ok("same image, same probabilities")

# --- multipart with several files: an array in part order equal to single answers
names = ["16747_3_1.jpg", "00000001_000.png", "cr-mono1-10-chest.dcm"]
ct, body = multipart([("file", n, "application/octet-stream", read(n)) for n in names] +
                     [("note", None, None, b"plain text field, ignored")])
s, h, b = predict(port, body, ct)
assert s == 200, (s, b[:300])
arr = json.loads(b)
assert isinstance(arr, list) and len(arr) == 3, arr
for n, one in zip(names, arr):
    check_answer(one, labels)
    assert one["request_id"] == h["x-request-id"]
    assert one["input"] == answers[n]["input"], (one["input"], answers[n]["input"])
    got = [p["probability"] for p in one["predictions"]]
    want = [p["probability"] for p in answers[n]["predictions"]]
    assert max(abs(a - c) for a, c in zip(got, want)) < 1e-5, (n, got, want)
ok("multipart with 3 files: array in part order, equal to the single-file answers")

ct, body = multipart([("file", "one.png", "image/png", read("00000001_000.png"))])
s, h, b = predict(port, body, ct, "?top=2")
assert s == 200 and len(json.loads(b)) == 1 and len(json.loads(b)[0]["predictions"]) == 2, b[:300]
ok("multipart with 1 file and ?top=2: array of one")

# --- errors
s, h, b = request(port, "GET", "/nope")
check_error(s, h, b, 404, "not_found")
s, h, b = request(port, "POST", "/v1/predictx", b"x", {"Content-Type": "image/png"})
check_error(s, h, b, 404)
ok("404 for unknown routes")

s, h, b = request(port, "GET", "/v1/predict")
check_error(s, h, b, 405, "method_not_allowed")
assert h.get("allow") == "POST", h
s, h, b = request(port, "DELETE", "/healthz")
check_error(s, h, b, 405)
assert "GET" in h.get("allow", ""), h
s, h, b = request(port, "POST", "/metrics", b"x", {"Content-Type": "text/plain"})
check_error(s, h, b, 405)
ok("405 with Allow")

bad_png = read("00000001_000.png")[:3000]
s, h, b = predict(port, bad_png)
check_error(s, h, b, 400, "malformed_image")
s, h, b = predict(port, b"")
check_error(s, h, b, 400, "empty_body")
for q in ("?top=0", "?top=99", "?top=abc", "?threshold=1.5", "?threshold=x"):
    s, h, b = predict(port, read("00000001_000.png"), "image/png", q)
    check_error(s, h, b, 400, "bad_query")
ct, body = multipart([("file", "a.png", "image/png", read("00000001_000.png"))])
s, h, b = predict(port, body[:len(body) // 2], ct)
check_error(s, h, b, 400, "bad_multipart")
ct, body = multipart([("note", None, None, b"no file here")])
s, h, b = predict(port, body, ct)
check_error(s, h, b, 400, "bad_multipart")
s, h, b = predict(port, b"--x\r\n", "multipart/form-data")
check_error(s, h, b, 400, "bad_multipart")
ct, body = multipart([("f", "a.png", "image/png", read("00000001_000.png")),
                      ("f", "b.png", "image/png", bad_png)])
s, h, b = predict(port, body, ct)
j = check_error(s, h, b, 400, "malformed_image")
assert "part 2" in j["error"]["message"], j
ok("400: truncated image, empty body, bad query, truncated/empty multipart, bad part named")

s, h, b = predict(port, b"hello", "text/plain")
check_error(s, h, b, 415, "unsupported_media_type")
s, h, b = request(port, "POST", "/v1/predict", b"hello", {})
check_error(s, h, b, 415)
s, h, b = predict(port, b"GIF89a" + b"\x00" * 200, "image/png")
check_error(s, h, b, 415, "unsupported_format")
ok("415: text/plain, no Content-Type, unknown signature")

s, h, b = predict(port, png_gray(32, 32))
check_error(s, h, b, 422, "unusable_image")
ok("422: a 32x32 image (below min_image_side)")

# 413 from Content-Length, before the body is read: the client sends only headers.
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
conn.putrequest("POST", "/v1/predict")
conn.putheader("Content-Type", "image/png")
conn.putheader("Content-Length", str(200 * 1024 * 1024))
conn.endheaders()
r = conn.getresponse()
b = r.read()
check_error(r.status, {k.lower(): v for k, v in r.getheaders()}, b, 413, "payload_too_large")
conn.close()
ok("413 from Content-Length before any body byte was sent")

# 413 while streaming a chunked body over max_upload_bytes (test instance: 4 MiB).
def chunks():
    block = b"\x89PNG\r\n\x1a\n" + b"\x00" * (256 * 1024 - 8)
    yield block
    for _ in range(4 * 5):
        yield b"\x00" * (256 * 1024)

conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
conn.request("POST", "/v1/predict", body=chunks(), headers={"Content-Type": "image/png"}, encode_chunked=True)
r = conn.getresponse()
b = r.read()
check_error(r.status, {k.lower(): v for k, v in r.getheaders()}, b, 413, "payload_too_large")
conn.close()
ok("413 while streaming a chunked body over max_upload_bytes")

# A chunked body under the limit is classified.
def small_chunks():
    data = read("00000001_000.png")
    for i in range(0, len(data), 10000):
        yield data[i:i + 10000]

conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
conn.request("POST", "/v1/predict", body=small_chunks(), headers={"Content-Type": "image/png"}, encode_chunked=True)
r = conn.getresponse()
b = r.read()
assert r.status == 200, (r.status, b[:200])
assert [p["probability"] for p in json.loads(b)["predictions"]] == [p["probability"] for p in j0["predictions"]]
conn.close()
ok("chunked upload under the limit: 200, same answer")

# Keep-alive: several requests on one connection, errors included.
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for want in (200, 404, 200, 400, 200):
    if want == 200:
        s, h, b = request(port, "POST", "/v1/predict", read("h0001.png"), {"Content-Type": "image/png"}, conn=conn)
    elif want == 404:
        s, h, b = request(port, "GET", "/missing", conn=conn)
    else:
        s, h, b = request(port, "POST", "/v1/predict?top=x", read("h0001.png"), {"Content-Type": "image/png"}, conn=conn)
    assert s == want, (s, want, b[:200])
conn.close()
ok("keep-alive connection: 5 requests in a row")

# --- metrics
# The previous request's completion callback may run just after its client
# has read the answer, so the in-flight gauge is read until it settles (this
# scrape itself is the one request in flight).
settle = time.time() + 60
while True:
    s, h, b = request(port, "GET", "/metrics")
    assert s == 200 and h["content-type"].startswith("text/plain"), (s, h)
    text = b.decode()
    if "chexd_in_flight_requests 1\n" in text or time.time() > settle:
        break
    time.sleep(0.05)
for needle in ('chexd_requests_total{route="/v1/predict",status="200"}',
               'chexd_requests_total{route="/v1/predict",status="400"}',
               'chexd_requests_total{route="/v1/predict",status="413"}',
               'chexd_requests_total{route="/v1/predict",status="415"}',
               'chexd_requests_total{route="/v1/predict",status="422"}',
               'chexd_requests_total{route="other",status="404"}',
               "chexd_request_duration_seconds_bucket{le=\"+Inf\"}",
               "chexd_inference_duration_seconds_count", "chexd_batch_size_bucket",
               "chexd_queue_depth 0", "chexd_in_flight_requests 1", "chexd_images_classified_total",
               'chexd_model_info{name="%s",sha256="%s",demo="true"} 1' % (model["name"], model["sha256"])):
    assert needle in text, (needle, text)
imgs = [ln for ln in text.splitlines() if ln.startswith("chexd_images_classified_total ")]
assert int(imgs[0].split()[1]) >= 10, imgs
for ln in text.splitlines():
    if ln and not ln.startswith("#"):
        name_labels, _, val = ln.rpartition(" ")
        float(val)
        assert "request_id" not in name_labels and "label=" not in name_labels, ln
ok("GET /metrics: requests by route/status, histograms, gauges, model info")

# --- the page, class activation maps, explain
for path, ctype in (("/", "text/html"), ("/index.html", "text/html"), ("/app.js", "javascript"),
                    ("/style.css", "text/css")):
    s, h, b = request(port, "GET", path)
    assert s == 200 and ctype in h["content-type"] and len(b) > 100, (path, s, h)
s, h, b = request(port, "GET", "/app.js.map")
check_error(s, h, b, 404)
s, h, b = request(port, "POST", "/", b"x", {"Content-Type": "text/plain"})
check_error(s, h, b, 405)
ok("the web page: /, /index.html, /app.js, /style.css")

s, h, b = predict(port, read("00000001_000.png"), "image/png", "?cam=top&top=1")
assert s == 200, (s, b[:300])
j = json.loads(b)
assert j["cam"]["label"] == j["predictions"][0]["label"], j["cam"]["label"]
assert j["cam"]["width"] == 512 and j["cam"]["height"] == 512 and j["cam"]["png_base64"], j["cam"].keys()
import base64
assert base64.b64decode(j["cam"]["png_base64"])[:8] == b"\x89PNG\r\n\x1a\n"
s, h, b = predict(port, read("00000001_000.png"), "image/png", "?cam=Nope")
check_error(s, h, b, 400, "bad_label")
ok("predict?cam=top: the map of the most probable label as a base64 PNG; unknown label 400")

s, h, b = request(port, "POST", "/v1/explain?label=cardiomegaly", read("16747_3_1.jpg"), {"Content-Type": "image/jpeg"})
assert s == 200 and h["content-type"] == "image/png" and b[:8] == b"\x89PNG\r\n\x1a\n", (s, h, b[:100])
assert h.get("x-chexd-label") == "Cardiomegaly", h
s, h, b = request(port, "GET", "/v1/explain")
check_error(s, h, b, 405)
assert h["allow"] == "POST"
s, h, b = request(port, "POST", "/v1/explain", read("h0001.png"), {"Content-Type": "image/png"})
check_error(s, h, b, 400, "bad_label")
ok("POST /v1/explain?label=: overlay PNG; 405 for GET; 400 without a label")
