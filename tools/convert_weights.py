#!/usr/bin/python3
"""Convert a DenseNet-121 checkpoint to the safetensors file chexd serves.

    tools/convert_weights.py [--preset chexnet|torchvision|xrv] [--labels L1,L2,...]
                             [--name NAME] [--dtype f32|f16|bf16] [--op-threshs JSON] IN OUT.safetensors

Accepted inputs (torch.load, CPU):
  chexnet      the public CheXNet reimplementation's model.pth.tar: a dict whose
               'state_dict' keys look like module.densenet121.features.denseblock1.
               denselayer1.norm.1.weight (old torchvision names norm.1/relu.1/conv.1/
               norm.2/conv.2) and module.densenet121.classifier.0.weight;
               14 ChestX-ray14 labels, 3 channels, ImageNet mean/std, resize256-crop224.
  torchvision  a plain torchvision densenet121 state_dict, a pickled whole model, or a
               dict holding one under 'model' (e.g. {'model': model, ...}); classifier
               Linear or Sequential(Linear, Sigmoid). Labels from --labels (the 14
               ChestX-ray14 names if the classifier has 14 rows and none are given).
  xrv          a torchxrayvision densenet121 checkpoint: 18 labels, 1 channel,
               pixels scaled to [-1024, 1024] (scale 2048, offset -1024), preset xrv.
Operating points (torchxrayvision's op_threshs, any preset): taken from a
state_dict entry named op_threshs (or ending in .op_threshs), a whole pickled
model's op_threshs attribute, a top-level 'op_threshs' entry of the saved dict,
or --op-threshs '[0.07, null, ...]' (null = NaN = a label the model was not
trained on; wins over the checkpoint's). torchxrayvision sets them from its own
model table, not from the weights file, so a real torchxrayvision .pt usually
needs --op-threshs with the list of its models.py for those weights. They are
written as the F32 tensor op_threshs (one per label, each in (0, 1) or NaN);
chexd then answers as torchxrayvision's DenseNet.forward: sigmoid, then op_norm.
Without --preset the kind is guessed from the keys. The output holds exactly
the tensors chexd's loader expects (torchvision names, no num_batches_tracked,
op_threshs as above)
and the __metadata__ it reads (labels, input_channels, input_size,
normalization, preprocess, name, demo, architecture). The safetensors format
is written with json+struct (no safetensors package needed).
"""
import argparse
import json
import re
import struct
import sys

import numpy as np
import torch

CHESTXRAY14 = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
               "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
               "Pleural_Thickening", "Hernia"]
XRV18 = ["Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema",
         "Fibrosis", "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule",
         "Mass", "Hernia", "Lung Lesion", "Fracture", "Lung Opacity",
         "Enlarged Cardiomediastinum"]
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}

PRESETS = {
    "chexnet": dict(labels=CHESTXRAY14, channels=3, norm=IMAGENET,
                    preprocess="resize256-crop224", name="chexnet"),
    "torchvision": dict(labels=None, channels=3, norm=IMAGENET,
                        preprocess="resize256-crop224", name="densenet121"),
    "xrv": dict(labels=XRV18, channels=1, norm={"scale": 2048, "offset": -1024},
                preprocess="xrv", name="xrv-densenet121"),
}

GROWTH, BN_SIZE, INIT, BLOCKS = 32, 4, 64, (6, 12, 24, 16)
IGNORED = re.compile(r"(^|\.)num_batches_tracked$")


class ConvertError(Exception):
    pass


def expected_shapes(cin, ncls):
    """name -> shape of every tensor chexd's densenet121 reads."""
    out = {"features.conv0.weight": (INIT, cin, 7, 7)}

    def bn(prefix, c):
        for p in ("weight", "bias", "running_mean", "running_var"):
            out[f"{prefix}.{p}"] = (c,)

    bn("features.norm0", INIT)
    c = INIT
    for b, n in enumerate(BLOCKS, 1):
        for j in range(1, n + 1):
            pre = f"features.denseblock{b}.denselayer{j}"
            bn(pre + ".norm1", c)
            out[pre + ".conv1.weight"] = (BN_SIZE * GROWTH, c, 1, 1)
            bn(pre + ".norm2", BN_SIZE * GROWTH)
            out[pre + ".conv2.weight"] = (GROWTH, BN_SIZE * GROWTH, 3, 3)
            c += GROWTH
        if b < len(BLOCKS):
            bn(f"features.transition{b}.norm", c)
            out[f"features.transition{b}.conv.weight"] = (c // 2, c, 1, 1)
            c //= 2
    bn("features.norm5", c)
    out["classifier.weight"] = (ncls, 1024)
    out["classifier.bias"] = (ncls,)
    return out


def extract_state_dict(obj):
    """Finds the tensors in whatever torch.load returned."""
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj:
                return extract_state_dict(obj[key])
        if obj and all(torch.is_tensor(v) for v in obj.values()):
            return obj
    raise ConvertError("no state_dict found: expected a dict with 'state_dict' or 'model', a "
                       "torch module, or a dict of tensors")


def find_op_threshs(obj, raw):
    """The checkpoint's operating points (torchxrayvision op_threshs), or None."""
    keys = [k for k in raw if k == "op_threshs" or k.endswith(".op_threshs")]
    if len(keys) > 1:
        raise ConvertError("several op_threshs entries: " + ", ".join(keys))
    if keys:
        return raw[keys[0]]
    for o in (obj, obj.get("model") if isinstance(obj, dict) else None):
        if isinstance(o, torch.nn.Module) and getattr(o, "op_threshs", None) is not None:
            return o.op_threshs
    if isinstance(obj, dict) and obj.get("op_threshs") is not None:
        return obj["op_threshs"]
    return None


def check_op_threshs(t, labels):
    """-> float32 array, one per label, each in (0, 1) or NaN."""
    try:
        a = np.asarray(t.detach().cpu().numpy() if torch.is_tensor(t) else
                       [np.nan if v is None else v for v in t], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ConvertError(f"op_threshs: not a list of numbers ({e})")
    if a.shape[0] != len(labels):
        raise ConvertError(f"op_threshs: {a.shape[0]} values for {len(labels)} labels")
    for i, v in enumerate(a):
        if not np.isnan(v) and not 0.0 < v < 1.0:
            raise ConvertError(f"op_threshs: entry {i} ({labels[i]}) is {v}, expected a "
                               "number in (0, 1) or NaN/null (untrained label)")
    if np.isnan(a).all():
        raise ConvertError("op_threshs: every entry is NaN (no label trained)")
    return a.astype(np.float32)


def normalise_names(sd):
    """Maps checkpoint names onto torchvision densenet121 names."""
    out = {}
    for name, t in sd.items():
        if IGNORED.search(name) or name == "op_threshs" or name.endswith(".op_threshs"):
            continue
        n = name
        for prefix in ("module.", "densenet121.", "model."):
            if n.startswith(prefix):
                n = n[len(prefix):]
        # torchvision < 0.3 names: norm.1 / relu.1 / conv.1 / norm.2 / conv.2
        n = re.sub(r"(denselayer\d+)\.(norm|relu|conv)\.([12])\.", r"\1.\2\3.", n)
        # classifier wrapped as Sequential(Linear, Sigmoid)
        n = re.sub(r"^classifier\.0\.", "classifier.", n)
        if n in out:
            raise ConvertError(f"two checkpoint tensors map to {n}")
        out[n] = t.detach().to(torch.float32).cpu().numpy()
    return out


def guess_preset(raw_names, sd):
    if any("densenet121." in k for k in raw_names):
        return "chexnet"
    if any(k.endswith("op_threshs") for k in raw_names):
        return "xrv"
    w = sd.get("features.conv0.weight")
    if w is not None and w.shape[1] == 1:
        return "xrv"
    return "torchvision"


def to_bytes(arr, dtype):
    a = np.ascontiguousarray(arr, dtype=np.float32)
    if dtype == "f32":
        return "F32", a.astype("<f4").tobytes()
    if dtype == "f16":
        return "F16", a.astype("<f2").tobytes()
    u = a.view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")  # round to nearest even
    return "BF16", u.tobytes()


def write_safetensors(path, tensors, meta, dtype="f32", keep_f32=()):
    """tensors: list of (name, ndarray); names in keep_f32 stay F32 whatever
    dtype is. Format: u64 header length, JSON, data."""
    header, blobs, off = {}, [], 0
    for name, arr in tensors:
        dt, raw = to_bytes(arr, "f32" if name in keep_f32 else dtype)
        header[name] = {"dtype": dt, "shape": list(arr.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = meta
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    import os
    os.replace(tmp, path)


def convert(src, dst, preset=None, labels=None, name=None, dtype="f32", demo=False,
            normalization=None, input_size=224, preprocess=None, op_threshs=None):
    obj = torch.load(src, map_location="cpu")
    raw = extract_state_dict(obj)
    if op_threshs is None:
        op_threshs = find_op_threshs(obj, raw)
    sd = normalise_names(raw)
    preset = preset or guess_preset(list(raw.keys()), sd)
    p = PRESETS[preset]
    if "classifier.weight" not in sd or "features.conv0.weight" not in sd:
        raise ConvertError("checkpoint lacks classifier.weight or features.conv0.weight "
                           "(not a densenet121?)")
    ncls, cin = sd["classifier.weight"].shape[0], sd["features.conv0.weight"].shape[1]
    if labels is None:
        labels = p["labels"]
        if labels is None and ncls == 14:
            labels = CHESTXRAY14
        if labels is None:
            raise ConvertError(f"the classifier has {ncls} outputs: give --labels")
    if len(labels) != ncls:
        raise ConvertError(f"{len(labels)} labels for a classifier with {ncls} outputs")
    if cin != p["channels"]:
        raise ConvertError(f"preset {preset} expects {p['channels']} input channel(s), "
                           f"features.conv0.weight has {cin}")
    want = expected_shapes(cin, ncls)
    for k, shape in want.items():
        if k not in sd:
            raise ConvertError(f"tensor {k} missing from the checkpoint")
        if tuple(sd[k].shape) != shape:
            raise ConvertError(f"tensor {k}: shape {list(sd[k].shape)}, expected {list(shape)}")
    extra = sorted(set(sd) - set(want))
    if extra:
        raise ConvertError("tensors densenet121 does not use: " + ", ".join(extra[:5]))
    meta = {
        "name": name or p["name"],
        "architecture": "densenet121",
        "demo": "true" if demo else "false",
        "labels": json.dumps(list(labels)),
        "input_channels": str(cin),
        "input_size": str(input_size),
        "normalization": json.dumps(normalization or p["norm"]),
        "preprocess": preprocess or p["preprocess"],
        "source_preset": preset,
    }
    tensors = [(k, sd[k]) for k in want]
    if op_threshs is not None:
        thr = check_op_threshs(op_threshs, labels)
        tensors.append(("op_threshs", thr))
    write_safetensors(dst, tensors, meta, dtype, keep_f32=("op_threshs",))
    return meta, (None if op_threshs is None else int(np.isnan(thr).sum()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--preset", choices=sorted(PRESETS))
    ap.add_argument("--labels", help="comma-separated label names, in classifier order")
    ap.add_argument("--name")
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32")
    ap.add_argument("--normalization", help='JSON: {"mean":[..],"std":[..]} or '
                    '{"scale":s,"offset":o}')
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--preprocess", choices=["resize256-crop224", "tencrop", "resize224", "xrv"])
    ap.add_argument("--demo", action="store_true", help="mark the weights as demo weights")
    ap.add_argument("--op-threshs", help="JSON list of operating points, one per label "
                    "(null = untrained label); overrides the checkpoint's op_threshs")
    a = ap.parse_args(argv)
    try:
        meta, untrained = convert(a.input, a.output, a.preset, a.labels.split(",") if a.labels else None,
                       a.name, a.dtype, a.demo,
                       json.loads(a.normalization) if a.normalization else None,
                       a.input_size, a.preprocess,
                       json.loads(a.op_threshs) if a.op_threshs else None)
    except (ConvertError, OSError, RuntimeError, ValueError) as e:
        print(f"convert_weights: {a.input}: {e}", file=sys.stderr)
        return 1
    print(f"convert_weights: wrote {a.output} ({meta['source_preset']}, "
          f"{len(json.loads(meta['labels']))} labels, {a.dtype}"
          + (f", op_threshs kept, {untrained} untrained" if untrained is not None else "")
          + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
