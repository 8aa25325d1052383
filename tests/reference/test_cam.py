"""tests/reference/test_cam.py - class activation maps: C (cam_driver) vs torch.

For each case the C side preprocesses a real radiograph, runs the network and
writes its input tensors, raw CAMs (n, 7, 7), their bilinear upsampling
(n, 224, 224) and the map placed back on the original image (H, W). Torch runs
torchvision's densenet121 loaded from the same safetensors on the SAME input
tensors, takes the final feature map with a forward hook on `features` (+ the
ReLU torchvision applies in forward), computes sum_k w[c,k] F[k] and
F.interpolate(bilinear, align_corners=False). The placing back is recomputed
with numpy from torch's maps (cam.h's definition: bilinear read of the crop's
map at each original pixel centre, mean over the boxes containing the pixel,
nearest box with clamped coordinates outside all boxes, min-max).

usage: test_cam.py CAM_DRIVER MODEL WORKDIR
"""
import json
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chexref  # noqa: E402

TOL = 1e-4
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
CASES = [
    # image, preset, label index (None: the last label)
    ("tests/data/00000001_000.png", "resize256-crop224", 1),
    ("tests/data/16747_3_1.jpg", "resize256-crop224", None),
    ("tests/data/16747_3_1.jpg", "tencrop", 2),
    ("tests/data/00000047_005.png", "xrv", 0),
    ("tests/data/h0001.png", "resize224", 5),
]


def project(up, boxes, W, H, S):
    """numpy version of chex_cam_project + chex_cam_normalise, float64."""
    X = np.arange(W, dtype=np.float64) + 0.5
    Y = np.arange(H, dtype=np.float64) + 0.5
    acc = np.zeros((H, W))
    cnt = np.zeros((H, W))
    samples, dists = [], []

    def axis(c, b0, b1, mirror):
        u = (c - b0) * (S / (b1 - b0)) - 0.5
        if mirror:
            u = (S - 1) - u
        u = np.clip(u, 0, S - 1)
        i0 = np.minimum(np.floor(u).astype(int), S - 2)
        l1 = u - i0
        inside = (c >= b0) & (c < b1)
        dist = np.where(c < b0, b0 - c, np.where(c >= b1, c - b1, 0.0))
        return i0, l1, inside, dist

    for k, (x0, y0, x1, y1, fl) in enumerate(boxes):
        ix, lx, inx, dx = axis(X, x0, x1, fl > 0.5)
        iy, ly, iny, dy = axis(Y, y0, y1, False)
        m = up[k].astype(np.float64)
        a = m[np.ix_(iy, ix)]
        b = m[np.ix_(iy, ix + 1)]
        c = m[np.ix_(iy + 1, ix)]
        d = m[np.ix_(iy + 1, ix + 1)]
        lx2, ly2 = lx[None, :], ly[:, None]
        s = (1 - ly2) * ((1 - lx2) * a + lx2 * b) + ly2 * ((1 - lx2) * c + lx2 * d)
        inside = iny[:, None] & inx[None, :]
        acc += np.where(inside, s, 0.0)
        cnt += inside
        samples.append(s)
        dists.append(dy[:, None] ** 2 + dx[None, :] ** 2)
    out = np.where(cnt > 0, acc / np.maximum(cnt, 1), 0.0)
    nearest = np.argmin(np.stack(dists), axis=0)
    fallback = np.take_along_axis(np.stack(samples), nearest[None], axis=0)[0]
    out = np.where(cnt > 0, out, fallback)
    lo, hi = out.min(), out.max()
    return (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)


def torch_cam(model, x, label):
    """-> (raw (n,h,w), up (n,S,S), logits) computed in torch with a hook on features."""
    got = {}
    hook = model.features.register_forward_hook(lambda m, i, o: got.__setitem__("f", o))
    with torch.no_grad():
        t = torch.from_numpy(x)
        logits = model(t)
        feats = torch.relu(got["f"])
        w = model.classifier.weight[label]
        raw = torch.einsum("k,nkhw->nhw", w, feats)
        up = F.interpolate(raw[:, None], size=(x.shape[2], x.shape[3]), mode="bilinear",
                           align_corners=False)[:, 0]
    hook.remove()
    return raw.numpy(), up.numpy(), logits.numpy(), model.classifier.bias[label].item()


def main():
    driver, model_path, work = sys.argv[1:4]
    model, meta = chexref.torch_model(model_path)
    ncls = model.classifier.weight.shape[0]
    failures = 0
    for i, (img, preset, label) in enumerate(CASES):
        if label is None:
            label = ncls - 1
        prefix = os.path.join(work, "cam%d" % i)
        out = subprocess.run([driver, model_path, os.path.join(ROOT, img), preset, str(label),
                              prefix], check=True, capture_output=True, text=True)
        info = json.loads(out.stdout.strip().splitlines()[-1])
        n, C, S, h, w = info["n"], info["channels"], info["size"], info["h"], info["w"]
        W, H = info["width"], info["height"]
        x = np.fromfile(prefix + ".in", dtype=np.float32).reshape(n, C, S, S)
        c_raw = np.fromfile(prefix + ".raw", dtype=np.float32).reshape(n, h, w)
        c_up = np.fromfile(prefix + ".up", dtype=np.float32).reshape(n, S, S)
        c_map = np.fromfile(prefix + ".map", dtype=np.float32).reshape(H, W)
        boxes = np.fromfile(prefix + ".boxes", dtype=np.float32).reshape(n, 5)
        t_raw, t_up, logits, bias = torch_cam(model, x, label)
        # CAM identity: the mean of the raw map plus the bias is the logit.
        ident = np.abs(t_raw.reshape(n, -1).mean(1) + bias - logits[:, label]).max()
        d_raw = np.abs(c_raw - t_raw).max()
        d_up = np.abs(c_up - t_up).max()
        ref_map = project(t_up, boxes, W, H, S)
        d_map = np.abs(c_map - ref_map).max()
        in_range = c_map.min() >= 0.0 and c_map.max() <= 1.0 and c_map.max() == 1.0
        ok = d_raw <= TOL and d_up <= TOL and d_map <= TOL and ident <= 1e-3 and in_range
        failures += not ok
        print("%-4s %-28s %-17s label %2d n=%2d %4dx%-4d raw %.2e up %.2e map %.2e "
              "(cam range %.3g) mean+bias-logit %.1e | ms: workspace+forward %.0f, raw CAM %.3f, map %.1f" %
              ("ok" if ok else "FAIL", os.path.basename(img), preset, label, n, W, H, d_raw,
               d_up, d_map, float(t_raw.max() - t_raw.min()), ident, info["forward_ms"],
               info["raw_ms"], info["map_ms"]))
    print("cam vs torch: %d of %d cases within %.0e" % (len(CASES) - failures, len(CASES), TOL))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
