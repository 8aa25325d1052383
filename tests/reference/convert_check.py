"""Builds checkpoints in each supported layout with torch (random weights, BN
statistics randomised so BN is not the identity), converts them with
tools/convert_weights.py, and compares the C network's probabilities on real
radiographs with the torch model the checkpoint came from (<= 1e-5)."""
import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np
import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import chexref  # noqa: E402
import xrvref  # noqa: E402

TOOL = os.path.join(HERE, "..", "..", "tools", "convert_weights.py")
PROB_TOL = 1e-5
XRAYS = ["00000001_000.png", "00000002_000.png", "00000047_005.png"]


def random_densenet(ncls, cin, seed, sequential_sigmoid=False):
    torch.manual_seed(seed)
    m = torchvision.models.densenet121(weights=None, num_classes=ncls)
    if cin != 3:
        m.features.conv0 = torch.nn.Conv2d(cin, 64, 7, 2, 3, bias=False)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.1)
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
        if cin == 1:
            # xrv inputs span [-1024, 1024], ~1000x ImageNet-normalised pixels;
            # trained xrv weights absorb that in conv0, so do the same here or
            # the random net's logits reach ~2500 and any fp32 order differs.
            m.features.conv0.weight.mul_(1.0 / 1024)
        m.classifier.weight.normal_(0, 0.05)
        m.classifier.bias.normal_(0, 0.1)
    if sequential_sigmoid:
        m.classifier = torch.nn.Sequential(m.classifier, torch.nn.Sigmoid())
    return m.eval()


def old_names(sd):
    """torchvision < 0.3 names, as in the CheXNet reimplementation's checkpoint."""
    return {re.sub(r"(denselayer\d+)\.(norm|relu|conv)([12])\.", r"\1.\2.\3.", k): v
            for k, v in sd.items()}


def torch_probs(model, x, sigmoid_inside=False):
    with torch.no_grad():
        y = model(torch.from_numpy(x))
    return (y if sigmoid_inside else torch.sigmoid(y)).double().numpy()


def convert(src, dst, *args):
    subprocess.run([sys.executable, TOOL, *args, src, dst], check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", required=True)
    ap.add_argument("--xrays", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    torch.set_num_threads(2)
    failures = []

    def check(tag, model, path, channels, norm_meta, sigmoid_inside=False, tol=PROB_TOL,
              expect_labels=None):
        _, meta = chexref.read_safetensors(path)
        x = np.stack([chexref.radiograph_tensor(os.path.join(a.xrays, f), norm_meta, channels)
                      for f in XRAYS])
        pt = torch_probs(model, x, sigmoid_inside)
        _, pc, _, info = chexref.run_c(a.driver, path, x, a.work, tag, threads=2, stages=False)
        d = float(np.abs(pc - pt).max())
        labels = json.loads(meta["labels"])
        print(f"{tag:28s} labels {len(labels):2d} channels {info['channels']} "
              f"max |p_C - p_torch| = {d:.3g}")
        if d > tol:
            failures.append(f"{tag}: probabilities differ by {d:.3g} > {tol}")
        if expect_labels and labels != expect_labels:
            failures.append(f"{tag}: labels {labels[:3]}... not the preset's")
        if info["channels"] != channels:
            failures.append(f"{tag}: C reports {info['channels']} channels")

    # (a) CheXNet reimplementation: DataParallel(DenseNet121 wrapper).state_dict(),
    # classifier Sequential(Linear, Sigmoid), old layer names, saved in a dict.
    m = random_densenet(14, 3, 1, sequential_sigmoid=True)
    sd = {"module.densenet121." + k: v for k, v in old_names(m.state_dict()).items()}
    assert any(".norm.1." in k for k in sd) and "module.densenet121.classifier.0.weight" in sd
    src = os.path.join(a.work, "model.pth.tar")
    torch.save({"epoch": 1, "arch": "densenet121", "state_dict": sd, "best_loss": 0.1}, src)
    out = os.path.join(a.work, "chexnet.safetensors")
    convert(src, out, "--preset", "chexnet")
    check("chexnet model.pth.tar", m, out, 3, {}, sigmoid_inside=True,
          expect_labels=["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass",
                         "Nodule", "Pneumonia", "Pneumothorax", "Consolidation", "Edema",
                         "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"])
    # Same checkpoint without --preset: recognised from its keys.
    out2 = os.path.join(a.work, "chexnet-auto.safetensors")
    convert(src, out2)
    if chexref.read_safetensors(out2)[1]["source_preset"] != "chexnet":
        failures.append("chexnet checkpoint not recognised without --preset")

    # (c) torchxrayvision: 18 outputs, 1 channel, op_threshs buffer (two NaN:
    # untrained labels), [-1024, 1024]; answers are torchxrayvision's
    # DenseNet.forward: sigmoid then op_norm (xrvref.XrvDenseNet).
    m = random_densenet(18, 1, 2)
    sd = dict(m.state_dict())
    thr = torch.rand(18, generator=torch.Generator().manual_seed(18)) * 0.8 + 0.1
    thr[[13, 15]] = float("nan")
    sd["op_threshs"] = thr
    src = os.path.join(a.work, "xrv.pt")
    torch.save(sd, src)
    out = os.path.join(a.work, "xrv.safetensors")
    convert(src, out, "--preset", "xrv")
    meta = chexref.read_safetensors(out)[1]
    if json.loads(meta["normalization"]) != {"scale": 2048, "offset": -1024} or \
            meta["preprocess"] != "xrv" or meta["input_channels"] != "1":
        failures.append(f"xrv metadata wrong: {meta}")
    check("xrv densenet121 op_norm", xrvref.XrvDenseNet(m, thr), out, 1,
          {"normalization": meta["normalization"]}, sigmoid_inside=True)
    # the same weights with thresholds from --op-threshs (null = untrained)
    out = os.path.join(a.work, "xrv-cli.safetensors")
    cli = [None if np.isnan(v) else float(v) for v in thr.tolist()]
    cli[0] = None
    convert(os.path.join(a.work, "xrv.pt"), out, "--preset", "xrv", "--op-threshs",
            json.dumps(cli))
    thr2 = torch.tensor([float("nan") if v is None else v for v in cli])
    check("xrv --op-threshs", xrvref.XrvDenseNet(m, thr2), out, 1,
          {"normalization": meta["normalization"]}, sigmoid_inside=True)
    # out-of-range thresholds are refused, naming the entry
    bad = [0.5] * 18
    bad[4] = 1.0
    r = subprocess.run([sys.executable, TOOL, "--op-threshs", json.dumps(bad), src,
                        os.path.join(a.work, "bad.safetensors")], capture_output=True, text=True)
    if r.returncode == 0 or "entry 4 (Edema)" not in r.stderr:
        failures.append(f"op_threshs 1.0 not refused: {r.stderr.strip()}")

    # (b) plain torchvision state_dict, 3 labels from --labels, stored as F16:
    # compared with the torch model carrying the F16-rounded weights.
    m = random_densenet(3, 3, 3)
    src = os.path.join(a.work, "tv.pth")
    torch.save(m.state_dict(), src)
    out = os.path.join(a.work, "tv16.safetensors")
    convert(src, out, "--preset", "torchvision", "--labels", "A,B,C", "--dtype", "f16",
            "--name", "tv16")
    m16, _ = chexref.torch_model(out)
    check("torchvision f16", m16, out, 3, {}, expect_labels=["A", "B", "C"])

    # jrzech-style {'model': whole pickled model}, BF16.
    m = random_densenet(14, 3, 4, sequential_sigmoid=True)
    src = os.path.join(a.work, "checkpoint")
    torch.save({"model": m, "best_loss": 0.2, "epoch": 3}, src)
    out = os.path.join(a.work, "jrzech-bf16.safetensors")
    convert(src, out, "--preset", "torchvision", "--dtype", "bf16")
    mb, _ = chexref.torch_model(out)
    check("pickled model bf16", mb, out, 3, {})

    # Another input size (metadata input_size 200: odd 25x25 second block, so
    # the direct 3x3 path there, Winograd in the first), every ISA, 2 threads.
    out = os.path.join(a.work, "tv200.safetensors")
    convert(os.path.join(a.work, "tv.pth"), out, "--preset", "torchvision", "--labels", "A,B,C",
            "--input-size", "200")
    x = torch.randn(3, 3, 200, 200, generator=torch.Generator().manual_seed(200)).numpy()
    m = random_densenet(3, 3, 3)
    pt = torch_probs(m, x)
    isas = os.popen(f"{a.driver} --isas").read().split()
    for isa in isas:
        _, pc, _, info = chexref.run_c(a.driver, out, x, a.work, "tv200-" + isa, threads=2,
                                       isa=isa, stages=False)
        d = float(np.abs(pc - pt).max())
        print(f"{'input_size 200 ' + isa:28s} max |p_C - p_torch| = {d:.3g}")
        if d > PROB_TOL or info["size"] != 200:
            failures.append(f"input_size 200 on {isa}: probabilities differ by {d:.3g}")

    # A labels count that disagrees with the classifier is refused.
    r = subprocess.run([sys.executable, TOOL, "--labels", "A,B", src,
                        os.path.join(a.work, "bad.safetensors")], capture_output=True, text=True)
    if r.returncode == 0 or "2 labels" not in r.stderr:
        failures.append(f"--labels A,B on 14 outputs not refused: {r.stderr.strip()}")

    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
