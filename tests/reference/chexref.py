"""tests/reference/chexref.py - shared helpers of the PyTorch comparison tests.

Reads safetensors with json+struct+numpy (no safetensors package), builds
torchvision's densenet121 from it, makes input tensors from radiographs, and
runs the C network through ref_driver.
"""
import json
import os
import struct
import subprocess

import numpy as np
import torch
import torchvision
from PIL import Image

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None, "I8": np.int8}

STAGES = ["stem", "block1", "trans1", "block2", "trans2", "block3", "trans3", "block4", "head"]


def read_safetensors(path):
    """-> (dict name -> float32 ndarray, metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    meta = header.pop("__metadata__", {})
    data = raw[8 + hlen:]
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        buf = data[b:end]
        if e["dtype"] == "BF16":
            u16 = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            arr = u16.view(np.float32)
        else:
            arr = np.frombuffer(buf, dtype=np.dtype(DTYPES[e["dtype"]]).newbyteorder("<"))
        out[name] = arr.astype(np.float32).reshape(e["shape"])
    return out, meta


def torch_model(path):
    """torchvision densenet121 in eval mode carrying the file's weights."""
    tensors, meta = read_safetensors(path)
    # int8 calibration's tensors (<conv>.int8_*) are not part of the network
    # nor are the operating points (op_threshs: applied after it, xrvref.op_norm)
    tensors = {k: v for k, v in tensors.items() if ".int8_" not in k and k != "op_threshs"}
    ncls = tensors["classifier.weight"].shape[0]
    cin = tensors["features.conv0.weight"].shape[1]
    model = torchvision.models.densenet121(weights=None, num_classes=ncls)
    if cin != 3:
        model.features.conv0 = torch.nn.Conv2d(cin, 64, 7, 2, 3, bias=False)
    sd = {k: torch.from_numpy(v.copy()) for k, v in tensors.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert all(k.endswith("num_batches_tracked") for k in missing), missing
    model.eval()
    return model, meta


def int8_split(xrays):
    """-> (calib, held): int8 calibration's radiographs (the first 16 NIH PNGs
    of the shared folder) and the held-out ones (the other NIH PNGs and one
    file of each other source: RGB PNG, JPEG, DICOM) the int8 error is
    measured on."""
    nih = sorted(f for f in os.listdir(xrays) if f.startswith("000") and f.endswith(".png"))
    others = ["h0001.png", "tb0005.png", "16747_3_1.jpg", "siim-pneumothorax-sample.dcm",
              "cr-mono1-10-chest.dcm"]
    calib = [os.path.join(xrays, f) for f in nih[:16]]
    held = [os.path.join(xrays, f) for f in nih[16:] + others]
    return calib, [f for f in held if os.path.exists(f)]


def torch_made_model(seed, calib_x):
    """A torch-made checkpoint: torchvision densenet121 with kaiming weights of
    this seed, BatchNorm statistics measured by torch on the calibration
    radiographs calib_x (N, 3, 224, 224), a random classifier. Eval mode."""
    torch.manual_seed(seed)
    m = torchvision.models.densenet121(weights=None, num_classes=14)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = None  # cumulative average over the batches seen
            mod.reset_running_stats()
    m.train()
    with torch.no_grad():
        for i in range(0, len(calib_x), 4):
            m(calib_x[i:i + 4])
        m.classifier.weight.normal_(0, 0.05)
        m.classifier.bias.normal_(0, 0.1)
    m.eval()
    return m


def normalisation(meta, channels):
    norm = json.loads(meta.get("normalization",
                               '{"mean":[0.485,0.456,0.406],"std":[0.229,0.224,0.225]}'))
    if "scale" in norm:
        s, o = float(norm["scale"]), float(norm["offset"])
        return [-o / s] * channels, [1.0 / s] * channels
    return norm["mean"], norm["std"]


def radiograph_tensor(path, meta, channels=3, size=224):
    """Resize the shorter side to 256 (bilinear), centre-crop 224, [0,1], normalise."""
    img = Image.open(path)
    img = img.convert("RGB" if channels == 3 else "L")
    w, h = img.size
    short = 256 * size // 224
    if w < h:
        nw, nh = short, int(round(h * short / w))
    else:
        nw, nh = int(round(w * short / h)), short
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = x.reshape(size, size, channels).transpose(2, 0, 1)
    mean, std = normalisation(meta, channels)
    for c in range(channels):
        x[c] = (x[c] - mean[c]) / std[c]
    return np.ascontiguousarray(x)


def torch_forward(model, x):
    """-> (logits, probs, {stage: ndarray}) for an (N,C,S,S) float32 array."""
    stages = {}
    f = model.features
    hooks = []
    names = {"pool0": "stem", "denseblock1": "block1", "transition1": "trans1",
             "denseblock2": "block2", "transition2": "trans2", "denseblock3": "block3",
             "transition3": "trans3", "denseblock4": "block4"}
    for mod_name, st in names.items():
        hooks.append(getattr(f, mod_name).register_forward_hook(
            lambda m, i, o, st=st: stages.__setitem__(st, o.detach().numpy().copy())))
    with torch.no_grad():
        t = torch.from_numpy(x)
        feats = torch.relu(f(t))
        stages["head"] = feats.numpy().copy()
        logits = model(t).numpy()
    for h in hooks:
        h.remove()
    return logits, 1.0 / (1.0 + np.exp(-logits.astype(np.float64))), stages


def run_c(driver, model_path, x, workdir, tag, threads=1, isa=None, stages=True,
          reference=False, extra_env=None):
    """Runs ref_driver; -> (logits, probs, {stage: ndarray}, info dict)."""
    inp = os.path.join(workdir, tag + ".in.f32")
    np.ascontiguousarray(x, dtype=np.float32).tofile(inp)
    prefix = os.path.join(workdir, tag)
    cmd = [driver, model_path, inp, str(x.shape[0]), prefix]
    if isa:
        cmd += ["--isa", isa]
    if stages:
        cmd.append("--stages")
    if reference:
        cmd.append("--reference")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.pop("CHEXD_ISA", None)
    env.pop("CHEXD_WINOGRAD", None)
    env.update(extra_env or {})
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    n = x.shape[0]
    logits = np.fromfile(prefix + ".logits", dtype=np.float32).reshape(n, -1)
    probs = np.fromfile(prefix + ".probs", dtype=np.float32).reshape(n, -1)
    st = {}
    if stages:
        for s in STAGES:
            st[s] = np.fromfile(prefix + "." + s, dtype=np.float32)
    return logits, probs, st, info
