"""The Open Inference Protocol routes of a running chexd, through oipclient.py.
argv: BASE_URL TOKEN TENSOR.f32 (tests/reference's preprocess_driver output for
tests/data/00000001_000.png with the served model's preset and normalisation).
Probabilities over /v2 must equal /v1/predict's on the same files (<= 1e-6)."""
import json
import os
import struct
import sys
import urllib.request

import oipclient as oc

base, token, tensor_path = sys.argv[1], sys.argv[2], sys.argv[3]
AUTH = {"Authorization": "Bearer " + token}
DATA = os.path.join(os.path.dirname(__file__), "..", "data")
FILES = ["00000001_000.png", "00000002_000.png", "00000047_005.png", "00013911_000.png",
         "16747_3_1.jpg", "h0001.png", "cr-mono1-10-chest.dcm", "siim-pneumothorax-sample.dcm"]
IMAGES = [open(os.path.join(DATA, f), "rb").read() for f in FILES]


def ok(msg):
    print("ok -", msg, flush=True)


def get(path, headers=AUTH):
    return oc.call(base, "GET", path, headers=headers)


m = get("/v1/model").json
MODEL, LABELS = m["name"], m["labels"]
C, S, L = m["input"]["channels"], m["input"]["size"], len(LABELS)


def v1_probs(data):
    req = urllib.request.Request(base + "/v1/predict", data=data, method="POST",
                                 headers=dict(AUTH, **{"Content-Type": "application/octet-stream"}))
    with urllib.request.urlopen(req, timeout=120) as r:
        j = json.loads(r.read())
    by = {p["label"]: p["probability"] for p in j["predictions"]}
    return [by[l] for l in LABELS]


REF = [v1_probs(b) for b in IMAGES]


def close(got, want, what):
    assert len(got) == len(want), (what, len(got), len(want))
    d = max(abs(a - b) for a, b in zip(got, want))
    assert d <= 1e-6, (what, d)
    return d


# --- metadata
a = get("/v2")
assert a.status == 200 and a.json["name"] == "chexd" and "binary_tensor_data" in a.json["extensions"], a.body
assert isinstance(a.json["version"], str)
for path in ("/v2/models/%s" % MODEL, "/v2/models/%s/versions/1" % MODEL):
    a = get(path)
    assert a.status == 200, (path, a.status, a.body)
    j = a.json
    assert j["name"] == MODEL and j["versions"] == ["1"] and j["platform"], j
    assert j["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]},
                           {"name": "input", "datatype": "FP32", "shape": [-1, C, S, S]}], j
    assert j["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, L]},
                            {"name": "labels", "datatype": "BYTES", "shape": [L]}], j
    a = get(path + "/ready")
    assert a.status == 200 and a.json["ready"] is True, (path, a.body)
ok("GET /v2, model metadata and ready (with and without /versions/1)")


# --- images, JSON and binary, 1 and 8
def check_probs(a, n, what, rid=None):
    assert a.status == 200, (what, a.status, a.body)
    j = a.json
    assert j["model_name"] == MODEL and j["model_version"] == "1", j
    if rid is not None:
        assert j["id"] == rid, j
    else:
        assert "id" not in j, j
    shapes = {o["name"]: (o["datatype"], o["shape"]) for o in j["outputs"]}
    assert shapes["probabilities"] == ("FP32", [n, L]), shapes
    p = a.outputs["probabilities"]
    return p


worst = 0.0
for n in (1, 8):
    for kind, build in (("JSON", oc.images_json), ("binary", oc.images_binary)):
        doc, tail = build(IMAGES[:n], id="r-%d-%s" % (n, kind))
        a = oc.infer(base, MODEL, doc, tail, headers=AUTH)
        p = check_probs(a, n, (n, kind), "r-%d-%s" % (n, kind))
        assert a.outputs["labels"] == LABELS, a.outputs["labels"]
        for i in range(n):
            worst = max(worst, close(p[i * L:(i + 1) * L], REF[i], (n, kind, FILES[i])))
        ok("%d image(s) as %s: probabilities equal /v1/predict's" % (n, kind))
print("max |v2 - v1| = %.3g" % worst)

# binary outputs, per output and request-wide, and the versioned route
doc, tail = oc.images_binary(IMAGES[:2], parameters={"binary_data_output": True})
a = oc.infer(base, MODEL, doc, tail, version="1", headers=AUTH)
assert a.headers["content-type"] == "application/octet-stream", a.headers
assert int(a.headers["inference-header-content-length"]) < len(a.body)
assert all("data" not in o for o in a.json["outputs"]), a.json
close(check_probs(a, 2, "binary out")[:L], REF[0], "binary out 0")
close(a.outputs["probabilities"][L:], REF[1], "binary out 1")
assert a.outputs["labels"] == LABELS
doc, tail = oc.images_json(IMAGES[:1], outputs=[{"name": "probabilities",
                                                 "parameters": {"binary_data": True}}])
a = oc.infer(base, MODEL, doc, tail, headers=AUTH)
assert [o["name"] for o in a.json["outputs"]] == ["probabilities"], a.json
assert a.json["outputs"][0]["parameters"]["binary_data_size"] == 4 * L
close(a.outputs["probabilities"], REF[0], "binary_data output")
ok("binary outputs (binary_data_output, per-output binary_data), /versions/1/infer")

# outputs selection
doc, tail = oc.images_json(IMAGES[:1], outputs=[{"name": "labels"}])
a = oc.infer(base, MODEL, doc, tail, headers=AUTH)
assert a.status == 200 and [o["name"] for o in a.json["outputs"]] == ["labels"], a.body
assert a.outputs["labels"] == LABELS
doc, tail = oc.images_json(IMAGES[:1], outputs=[{"name": "labels"}, {"name": "probabilities"}])
a = oc.infer(base, MODEL, doc, tail, headers=AUTH)
assert [o["name"] for o in a.json["outputs"]] == ["labels", "probabilities"], a.body
ok("outputs selection and order honoured")

# --- FP32 tensor input = tests/reference's preprocessed tensor
raw = open(tensor_path, "rb").read()
vals = list(struct.unpack("<%df" % (len(raw) // 4), raw))
assert len(vals) == C * S * S, (len(vals), C, S)
for kind, build in (("JSON", oc.tensor_json), ("binary", oc.tensor_binary)):
    doc, tail = build(vals, [1, C, S, S])
    a = oc.infer(base, MODEL, doc, tail, headers=AUTH)
    d = close(check_probs(a, 1, "tensor " + kind), REF[0], "tensor " + kind)
    ok("FP32 tensor [1, %d, %d, %d] as %s equals /v1/predict on the PNG (max diff %.3g)"
       % (C, S, S, kind, d))
doc, tail = oc.tensor_binary(vals * 2, [2, C, S, S])
a = oc.infer(base, MODEL, doc, tail, headers=AUTH)
p = check_probs(a, 2, "tensor x2")
close(p[:L], REF[0], "tensor x2 a")
close(p[L:], REF[0], "tensor x2 b")
ok("two FP32 tensors in one request")


# --- errors: status and {"error": "message"}
def expect(a, status, needle):
    assert a.status == status, (status, a.status, a.body)
    assert a.headers["content-type"].startswith("application/json"), a.headers
    assert list(a.json) == ["error"] and needle in a.json["error"], (needle, a.json)


expect(get("/v2/models/nosuch"), 404, "unknown model nosuch")
expect(get("/v2/models/nosuch/ready"), 404, "unknown model")
expect(get("/v2/models/%s/versions/7" % MODEL), 404, "has no version 7")
doc, tail = oc.images_json(IMAGES[:1])
expect(oc.infer(base, "nosuch", doc, tail, headers=AUTH), 404, "unknown model nosuch")
expect(oc.infer(base, MODEL, doc, tail, version="2", headers=AUTH), 404, "has no version 2")
bad = [
    ({"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                  "parameters": {"content_type": "base64"}, "data": ["aGk="]}]},
     "input 'image': data holds 1 elements, shape [2] needs 2"),
    ({"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
     "input 'image': datatype FP32, expected BYTES"),
    ({"inputs": [{"name": "input", "shape": [1, C + 1, S, S], "datatype": "FP32", "data": [0]}]},
     "input 'input': shape must be [N, %d, %d, %d]" % (C, S, S)),
    ({"inputs": [{"name": "pixels", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
     "unknown input 'pixels'"),
    (oc.images_json(IMAGES[:1], outputs=[{"name": "logits"}])[0], "unknown output 'logits'"),
]
for doc, needle in bad:
    expect(oc.infer(base, MODEL, doc, headers=AUTH), 400, needle)
doc, tail = oc.images_binary(IMAGES[:1])
doc["inputs"][0]["parameters"]["binary_data_size"] += 10
expect(oc.infer(base, MODEL, doc, tail, headers=AUTH), 400, "overruns the body")
doc, tail = oc.images_json([b"not an image at all"])
a = oc.infer(base, MODEL, doc, tail, headers=AUTH)
assert a.status in (400, 415, 422) and "input 'image' element 0" in a.json["error"], a.body
a = oc.call(base, "POST", "/v2/models/%s/infer" % MODEL, b"{not json", dict(AUTH))
expect(a, 400, "not valid JSON")
a = oc.call(base, "POST", "/v2/models/%s/infer" % MODEL, b"{}",
            dict(AUTH, **{"Inference-Header-Content-Length": "99"}))
expect(a, 400, "Inference-Header-Content-Length 99 exceeds")
expect(get("/v2/models/%s" % MODEL, headers={}), 401, "bearer token")
doc, tail = oc.images_json(IMAGES[:1])
expect(oc.infer(base, MODEL, doc, tail), 401, "bearer token")
a = oc.call(base, "POST", "/v2/models/%s/infer" % MODEL, b"x" * (9 << 20), dict(AUTH))
expect(a, 413, "max_upload_bytes")
ok("404, 400 (each field named), 401 and 413 as {\"error\": message}")
