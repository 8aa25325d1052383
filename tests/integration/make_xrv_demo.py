"""A torchxrayvision-layout demo model made from chexd's CheXNet-layout demo
weights, without torch: 1 input channel (conv0 averaged over RGB and scaled to
xrv's input range), 18 xrv labels
(classifier rows reused and rescaled), the xrv preset and normalisation
(as tools/convert_weights.py --preset xrv writes them), and operating points
with NaN for three untrained labels. Demo weights: no clinical meaning.
argv: DEMO.safetensors OUT.safetensors"""
import json
import struct
import sys

import numpy as np

XRV18 = ["Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema",
         "Fibrosis", "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule",
         "Mass", "Hernia", "Lung Lesion", "Fracture", "Lung Opacity",
         "Enlarged Cardiomediastinum"]
DT = {"F32": "<f4", "F16": "<f2"}

src, dst = sys.argv[1], sys.argv[2]
b = open(src, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
t = {}
for k, v in h.items():
    if k == "__metadata__" or ".int8_" in k:
        continue
    s, e = v["data_offsets"]
    t[k] = np.frombuffer(b[8 + n + s: 8 + n + e], dtype=DT[v["dtype"]]).reshape(v["shape"]).astype(np.float32)
# xrv inputs span about +-1024, ImageNet-normalised ones about +-2.5
t["features.conv0.weight"] = t["features.conv0.weight"].mean(axis=1, keepdims=True) / 450.0
w, bias = t["classifier.weight"], t["classifier.bias"]
rows = [i % w.shape[0] for i in range(18)]
scale = np.array([1.0 + 0.15 * (i // w.shape[0]) for i in range(18)], np.float32)
t["classifier.weight"] = w[rows] * scale[:, None]
t["classifier.bias"] = bias[rows] + np.linspace(-0.3, 0.3, 18, dtype=np.float32)
thr = np.linspace(0.2, 0.8, 18, dtype=np.float32)
thr[[2, 8, 15]] = np.nan
t["op_threshs"] = thr
meta = {"name": "xrv-demo", "architecture": "densenet121", "demo": "true",
        "labels": json.dumps(XRV18), "input_channels": "1", "input_size": "224",
        "normalization": json.dumps({"scale": 2048, "offset": -1024}), "preprocess": "xrv",
        "description": "Demo weights in torchxrayvision's layout, derived from chexd's "
                       "random demo weights; no clinical meaning."}
header, blobs, off = {}, [], 0
for k, a in t.items():
    raw = np.ascontiguousarray(a, dtype="<f4").tobytes()
    header[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
    blobs.append(raw)
    off += len(raw)
header["__metadata__"] = meta
hb = json.dumps(header, separators=(",", ":")).encode()
hb += b" " * (-len(hb) % 8)
with open(dst, "wb") as f:
    f.write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))
