"""tests/reference/test_cam_api.py - class activation maps through chexd and bin/chex.

The maps chexd answers (POST /v1/predict?cam=..., POST /v1/explain) and the
files `chex classify --cam` writes are compared pixel by pixel with cam_driver's
map of the same image (the map test_cam.py checks against torch): the gray PNG
is round(255 * map) (+-1), the overlay is the documented blend of the
radiograph and matplotlib's inferno(map) (+-2). Then the errors: unknown or missing label
(400 naming it and listing the labels), several files for explain, wrong
method, undecodable body.

usage: test_cam_api.py URL CAM_DRIVER MODEL WORKDIR CHEX
"""
import base64
import http.client
import io
import json
import os
import subprocess
import sys
import urllib.parse
import uuid

import numpy as np
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
URL, DRIVER, MODEL, WORK, CHEX = sys.argv[1:6]
HOST = urllib.parse.urlparse(URL)
FAILED = []


def ok(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILED.append(what)


def data(name):
    with open(os.path.join(ROOT, "tests", "data", name), "rb") as f:
        return f.read()


def request(method, path, body=None, headers=None):
    c = http.client.HTTPConnection(HOST.hostname, HOST.port, timeout=300)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    b = r.read()
    c.close()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), b


def multipart(files):
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, blob in files:
        out.write(("--%s\r\nContent-Disposition: form-data; name=\"image\"; filename=\"%s\"\r\n"
                   "Content-Type: application/octet-stream\r\n\r\n" % (boundary, name)).encode())
        out.write(blob + b"\r\n")
    out.write(("--%s--\r\n" % boundary).encode())
    return out.getvalue(), "multipart/form-data; boundary=" + boundary


MODEL_INFO = json.loads(request("GET", "/v1/model")[2])
LABELS = MODEL_INFO["labels"]
PRESET = MODEL_INFO["preprocess"]


def driver_map(image, label):
    prefix = os.path.join(WORK, "api-%s-%d" % (os.path.basename(image), label))
    out = subprocess.run([DRIVER, MODEL, os.path.join(ROOT, "tests", "data", image), PRESET,
                          str(label), prefix], check=True, capture_output=True, text=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    return np.fromfile(prefix + ".map", dtype=np.float32).reshape(info["height"], info["width"])


def inferno():
    """matplotlib's inferno (Debian python3-matplotlib), each channel round(255 v):
    the independent reference of heatmap.c's table."""
    from matplotlib._cm_listed import _inferno_data
    return np.floor(np.array(_inferno_data, dtype=np.float64) * 255 + 0.5)


def overlay_diff(got, image, m):
    """Largest distance of the overlay from the documented blend. The map the
    test computes (driver) and the daemon's differ by float rounding (~1e-6),
    which can move a pixel across a colour-table step, so each pixel is
    compared with the blend at its table index and the two neighbours (the
    same +-1 quantisation step the gray map checks allow)."""
    g = np.asarray(Image.open(io.BytesIO(data(image))).convert("L"), dtype=np.float64) / 255.0
    v = np.clip(m.astype(np.float64), 0, 1)
    idx = np.floor(v * 255 + 0.5).astype(int)
    a = (0.2 + 0.45 * v)[..., None]
    tab = inferno()
    got = np.asarray(got, dtype=np.float64)
    best = None
    for step in (-1, 0, 1):
        want = g[..., None] * 255 * (1 - a) + a * tab[np.clip(idx + step, 0, 255)]
        d = np.abs(got - want).max(axis=-1)
        best = d if best is None else np.minimum(best, d)
    return float(best.max())


def gray_diff(png_bytes, m):
    img = Image.open(io.BytesIO(png_bytes))
    arr = np.asarray(img, dtype=np.int32)
    want = np.floor(np.clip(m, 0, 1) * 255 + 0.5).astype(np.int32)
    return img.mode, img.size, int(np.abs(arr - want).max())


def main():
    tab = inferno()
    ok(tab.shape == (256, 3), "matplotlib's inferno: 256 entries")
    card = LABELS.index("Cardiomegaly") if "Cardiomegaly" in LABELS else 1
    cname = LABELS[card]

    # predict?cam=LABEL, raw body
    s, h, b = request("POST", "/v1/predict?cam=" + urllib.parse.quote(cname),
                      data("00000001_000.png"), {"Content-Type": "image/png"})
    j = json.loads(b)
    cam = j.get("cam", {})
    m = driver_map("00000001_000.png", card)
    mode, size, d = gray_diff(base64.b64decode(cam.get("png_base64", "")), m)
    ok(s == 200 and cam.get("label") == cname and cam.get("width") == 512 and
       cam.get("height") == 512 and mode == "L" and size == (512, 512) and d <= 1,
       "predict?cam=%s: gray 8-bit PNG 512x512, max diff %d/255 from the reference map" %
       (cname, d))

    # predict?cam=top, JPEG with crop margins
    s, h, b = request("POST", "/v1/predict?cam=top", data("16747_3_1.jpg"),
                      {"Content-Type": "image/jpeg"})
    j = json.loads(b)
    probs = [p["probability"] for p in j["predictions"]]
    top = LABELS[int(np.argmax(probs))]
    cam = j.get("cam", {})
    m = driver_map("16747_3_1.jpg", LABELS.index(top))
    mode, size, d = gray_diff(base64.b64decode(cam.get("png_base64", "")), m)
    ok(s == 200 and cam.get("label") == top and size == (1036, 885) and d <= 1,
       "predict?cam=top: label %s is the most probable, 1036x885, max diff %d/255" % (top, d))

    # multipart predict with two files: each answer has its own map
    body, ct = multipart([("a.png", data("00000001_000.png")), ("b.jpg", data("16747_3_1.jpg"))])
    s, h, b = request("POST", "/v1/predict?cam=top", body, {"Content-Type": ct})
    arr = json.loads(b)
    ok(s == 200 and len(arr) == 2 and [a["cam"]["width"] for a in arr] == [512, 1036],
       "multipart predict?cam=top: one map per image at its own size")

    # explain: the overlay, multipart like `curl -F image=@...`
    body, ct = multipart([("x.png", data("00000001_000.png"))])
    s, h, b = request("POST", "/v1/explain?label=" + urllib.parse.quote(cname), body,
                      {"Content-Type": ct})
    img = Image.open(io.BytesIO(b)) if s == 200 else None
    m = driver_map("00000001_000.png", card)
    d = overlay_diff(img, "00000001_000.png", m) if img else 1e9
    ok(s == 200 and h.get("content-type") == "image/png" and b[:8] == b"\x89PNG\r\n\x1a\n" and
       img.mode == "RGB" and img.size == (512, 512) and d <= 2,
       "explain?label=%s: image/png RGB overlay 512x512, max diff %.2f from the documented "
       "blend" % (cname, d))
    with open(os.path.join(WORK, "overlay.png"), "wb") as f:
        f.write(b)

    # explain with a raw JPEG body and a case-insensitive label
    s, h, b = request("POST", "/v1/explain?label=" + urllib.parse.quote(cname.lower()),
                      data("16747_3_1.jpg"), {"Content-Type": "image/jpeg"})
    ok(s == 200 and Image.open(io.BytesIO(b)).size == (1036, 885),
       "explain with a raw JPEG body, label in lower case")

    # errors
    s, h, b = request("POST", "/v1/explain?label=Nope", data("00000001_000.png"),
                      {"Content-Type": "image/png"})
    e = json.loads(b).get("error", {})
    ok(s == 400 and e.get("code") == "bad_label" and '"Nope"' in e.get("message", "") and
       all(l in e["message"] for l in LABELS), "explain, unknown label: 400 naming it, listing "
       "the labels")
    s, h, b = request("POST", "/v1/explain", data("00000001_000.png"), {"Content-Type": "image/png"})
    ok(s == 400 and "no label" in json.loads(b)["error"]["message"], "explain without ?label=: 400")
    s, h, b = request("POST", "/v1/predict?cam=Nope", data("00000001_000.png"),
                      {"Content-Type": "image/png"})
    ok(s == 400 and "top" in json.loads(b)["error"]["message"], "predict?cam=Nope: 400 (top listed)")
    body, ct = multipart([("a.png", data("00000001_000.png")), ("b.png", data("h0001.png"))])
    s, h, b = request("POST", "/v1/explain?label=" + cname, body, {"Content-Type": ct})
    ok(s == 400 and "one image" in json.loads(b)["error"]["message"], "explain with two files: 400")
    s, h, b = request("GET", "/v1/explain?label=" + cname)
    ok(s == 405 and h.get("allow") == "POST", "GET /v1/explain: 405, Allow: POST")
    s, h, b = request("POST", "/v1/explain?label=" + cname, b"not an image",
                      {"Content-Type": "application/octet-stream"})
    ok(s == 415 and json.loads(b)["error"]["code"] == "unsupported_format",
       "explain with an undecodable body: 415 like predict")

    # chex classify --cam writes the same gray map and the overlay
    out = subprocess.run([CHEX, "classify", "--model", MODEL, "--cam", cname, "--cam-out", WORK,
                          os.path.join(ROOT, "tests", "data", "00000001_000.png")],
                         capture_output=True, text=True)
    line = json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}
    c = line.get("cam", {})
    gray = open(c["heatmap"], "rb").read() if c.get("heatmap") else b""
    mode, size, d = gray_diff(gray, m) if gray else ("", (0, 0), 999)
    over = Image.open(c["overlay"]) if c.get("overlay") else None
    ok(out.returncode == 0 and c.get("label") == cname and mode == "L" and d <= 1 and
       over is not None and over.size == (512, 512) and over.mode == "RGB",
       "chex classify --cam %s --cam-out DIR: %s, %s (max diff %d/255)" %
       (cname, os.path.basename(c.get("heatmap", "?")), os.path.basename(c.get("overlay", "?")), d))

    print("cam API: %d failed" % len(FAILED))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
