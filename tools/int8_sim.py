"""tools/int8_sim.py - torch fake-quant of chexd's int8 scheme, for the
measurements in docs/PERFORMANCE.md ("The int8 path").

Simulates, on torchvision densenet121, what `chex calibrate` + precision int8
do: per-channel u8 activation scales from the calibration radiographs' maxima,
folded into the weights (w * a_c), s8 weights per output row rounded by GPTQ
over the calibration inputs' second moments. It then reports the worst and mean
|p_int8 - p_fp32| over the held-out radiographs, the split of
tests/reference/int8_check.py (chexref.int8_split). Variants isolate where the
error comes from:

  shipped         the scheme chexd ships
  exact-weights   weights left in fp32, only the activations quantised
  a16             shipped weights, 16-bit activations

  --noclip        values past the calibrated range stay exact
  --headroom F    activation ranges F x the calibration maxima
  --imgstd K      ranges max + K standard deviations of the per-image maxima
  --oracle        ranges (and H) from calibration AND held-out radiographs
                  (not a method: the bound better calibration data could give)

A fake-quant is not chexd's arithmetic (fp32 stem, exact BN folding, u8
bottleneck): it tracks the C path's worst case within about +-0.003.
Run with Debian's interpreter: /usr/bin/python3 tools/int8_sim.py --seed 7
exact-weights shipped  (GPTQ takes a few minutes per recipe on 2 threads).
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))
import chexref  # noqa: E402


def radiograph(path):
    if not path.endswith(".dcm"):
        return chexref.radiograph_tensor(path, {}, 3)
    import tempfile

    import pydicom
    from PIL import Image
    d = pydicom.dcmread(path)
    a = d.pixel_array.astype(np.float64)
    a = (a - a.min()) / max(a.max() - a.min(), 1e-9) * 255.0
    if str(getattr(d, "PhotometricInterpretation", "")) == "MONOCHROME1":
        a = 255.0 - a
    with tempfile.NamedTemporaryFile(suffix=".png") as t:
        Image.fromarray(a.round().astype(np.uint8)).save(t.name)
        return chexref.radiograph_tensor(t.name, {}, 3)


def walk(m, x, conv_fn):
    """Forward in which conv_fn(name, conv, inp) replaces every dense-layer and
    transition conv (inp >= 0; for transitions already 2x2-pooled, which a
    1x1 conv commutes with, as chexd computes it)."""
    f = m.features
    with torch.no_grad():
        h = f.pool0(f.relu0(f.norm0(f.conv0(x))))
        for bi in range(1, 5):
            feats = [h]
            for ln, layer in getattr(f, f"denseblock{bi}").named_children():
                i = F.relu(layer.norm1(torch.cat(feats, 1)))
                i = F.relu(layer.norm2(conv_fn(f"b{bi}.{ln}.conv1", layer.conv1, i)))
                feats.append(conv_fn(f"b{bi}.{ln}.conv2", layer.conv2, i))
            h = torch.cat(feats, 1)
            if bi < 4:
                t = getattr(f, f"transition{bi}")
                h = conv_fn(f"t{bi}", t.conv, F.avg_pool2d(F.relu(t.norm(h)), 2))
        return m.classifier(torch.flatten(F.adaptive_avg_pool2d(F.relu(f.norm5(h)), 1), 1))


def cols(inp, conv):
    """im2col rows (N*P, K), columns in conv weight order (C, kh, kw)."""
    if conv.kernel_size == (1, 1):
        return inp.permute(0, 2, 3, 1).reshape(-1, inp.shape[1])
    u = F.unfold(inp, conv.kernel_size, padding=conv.padding, stride=conv.stride)
    return u.transpose(1, 2).reshape(-1, u.shape[1])


def gptq(w, h, damp=0.01, block=128):
    """w (O, K) float64 rounded to s8 per row (scale max|w|/127) by GPTQ over H."""
    sw = w.abs().amax(1, keepdim=True) / 127.0
    sw[sw == 0] = 1.0
    h = h.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(h.shape[0], dtype=h.dtype)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    wn, un, s = w.numpy().copy(), u.numpy(), sw[:, 0].numpy()
    q = np.zeros_like(wn)
    k = wn.shape[1]
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1, e1 = wn[:, i1:i2].copy(), np.zeros((wn.shape[0], i2 - i1))
        for i in range(i2 - i1):
            qi = np.clip(np.round(w1[:, i] / s), -127, 127) * s
            q[:, i1 + i] = qi
            e = (w1[:, i] - qi) / un[i1 + i, i1 + i]
            w1[:, i:] -= np.outer(e, un[i1 + i, i1 + i:i2])
            e1[:, i] = e
        wn[:, i2:] -= e1 @ un[i1:i2, i2:]
    return torch.from_numpy(q)


def act_range(inp, a):
    """Per input channel range the u8 grid spans (255 steps)."""
    top = inp.amax(dim=(0, 2, 3))
    r = top.clone()
    if a.imgstd is not None:
        r = top + a.imgstd * inp.amax(dim=(2, 3)).std(0)
    r = r * a.headroom
    r[top <= 0] = float(inp.max())
    return r


def fake_act(x, rng, levels, noclip):
    s = (rng / levels).view(1, -1, 1, 1)
    q = torch.clamp(torch.round(x / s), max=levels) * s
    return torch.where(x > levels * s, x, q) if noclip else q


def calibrate(m, cx, recipe, a):
    """-> {conv name: replacement fn}, built on the fp32 network's inputs."""
    levels = 65535 if recipe == "a16" else 255
    qmap = {}

    def conv_fn(name, conv, inp):
        rng = act_range(inp, a)
        wq = conv.weight
        if recipe != "exact-weights":
            w = wq.double()
            kk = w.shape[2] * w.shape[3]
            col = (rng / 255.0).double().repeat_interleave(kk).unsqueeze(0)
            wf = w.reshape(w.shape[0], -1) * col          # folded: w * a_c
            x = cols(inp, conv) / col.float()
            wq = (gptq(wf, (x.T @ x).double()) / col).reshape(w.shape).float()
        qmap[name] = lambda i, wq=wq, rng=rng, conv=conv: F.conv2d(
            fake_act(i, rng, levels, a.noclip), wq, None, conv.stride, conv.padding)
        return conv(inp)
    walk(m, cx, conv_fn)
    return qmap


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipes", nargs="+", choices=["shipped", "exact-weights", "a16"])
    ap.add_argument("--xrays", default=os.path.join(HERE, "..", "..", "shared", "data", "xrays"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--noclip", action="store_true")
    ap.add_argument("--headroom", type=float, default=1.0)
    ap.add_argument("--imgstd", type=float)
    ap.add_argument("--oracle", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    calib, held = chexref.int8_split(a.xrays)
    cx = torch.from_numpy(np.stack([radiograph(f) for f in calib]))
    hx = torch.from_numpy(np.stack([radiograph(f) for f in held]))
    m = chexref.torch_made_model(a.seed, cx)
    for p in m.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        p32 = torch.sigmoid(m(hx).double())
    for recipe in a.recipes:
        t0 = time.time()
        qmap = calibrate(m, torch.cat([cx, hx]) if a.oracle else cx, recipe, a)
        p8 = torch.sigmoid(walk(m, hx, lambda n, c, i: qmap[n](i)).double())
        d = (p8 - p32).abs()
        i, k = np.unravel_index(int(d.argmax()), d.shape)
        print(f"seed {a.seed} {recipe:13s} worst {float(d.max()):.4f} mean {float(d.mean()):.5f}"
              f" ({os.path.basename(held[i])} label {k}) [{time.time() - t0:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
