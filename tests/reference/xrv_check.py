"""chexd on torchxrayvision weights vs torchxrayvision's own pipeline
(tests/reference/xrvref.py, written from its source), on torch-made
checkpoints in the xrv layout carrying operating points, some NaN.

For each radiograph (8-bit gray NIH PNGs, RGB PNG and JPEG, a 16-bit PNG made
from a radiograph): the xrv preset's tensor vs torchxrayvision's
(normalize, channel mean, XRayCenterCrop, XRayResizer = skimage resize), and
`bin/chex classify`'s probabilities vs DenseNet.forward (sigmoid + op_norm)
on torchxrayvision's tensor; untrained labels must be absent from
predictions and named under untrained_labels. Two checkpoint forms: a
state_dict with an op_threshs entry, and a whole pickled model with an
op_threshs attribute. Then chexd's /v1/model "outputs", ?top/?cam=top
skipping untrained labels, ?cam=<untrained> refused (400), and `chex
evaluate` leaving them out."""
import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, HERE)
import chexref  # noqa: E402
import convert_check  # noqa: E402  (random_densenet: torch-made xrv-layout weights)
import xrvref  # noqa: E402

TOOL = os.path.join(ROOT, "tools", "convert_weights.py")
TENSOR_TOL = 1e-4   # in the [-1024, 1024] tensor's units
PROB_TOL = 1e-4
GRAY = ["00000001_000.png", "00000047_005.png", "00022041_000.png"]
COLOUR = ["h0001.png", "tb0005.png", "16747_3_1.jpg"]
UNTRAINED = [2, 8, 15]  # Infiltration, Pneumonia, Fracture: NaN thresholds


def sixteen_bit(src, dst):
    """A 16-bit gray PNG with the radiograph's content over the full range."""
    a = np.asarray(Image.open(src).convert("L"), dtype=np.uint32)
    yy, xx = np.mgrid[0:a.shape[0], 0:a.shape[1]]
    b = (a * 257 + (xx * 31 + yy * 17) % 257).clip(0, 65535).astype(np.uint16)
    Image.fromarray(b).save(dst)
    return dst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chex", required=True)
    ap.add_argument("--chexd", required=True)
    ap.add_argument("--pre-driver", required=True)
    ap.add_argument("--xrays", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    torch.set_num_threads(2)
    failures = []

    images = [(os.path.join(a.xrays, f), 255, "8-bit gray") for f in GRAY]
    images += [(os.path.join(a.xrays, f), 255, "colour") for f in COLOUR]
    images.append((sixteen_bit(os.path.join(a.xrays, GRAY[1]),
                               os.path.join(a.work, "sixteen.png")), 65535, "16-bit gray"))

    # the tensors: chexd's xrv preset vs torchxrayvision's, per image
    ref_x = []
    for path, maxval, kind in images:
        x = xrvref.tensor(path, maxval)
        ref_x.append(x)
        out = os.path.join(a.work, "t.f32")
        subprocess.run([a.pre_driver, "--png16", "full", "--mean", "0.5", "--std",
                        repr(1.0 / 2048), "xrv", "1", "224", path, out], check=True,
                       capture_output=True)
        c = np.fromfile(out, dtype=np.float32).reshape(x.shape)
        d = float(np.abs(c - x).max())
        print(f"tensor {os.path.basename(path):22s} {kind:12s} max |x_chexd - x_xrv| = {d:.3g}")
        if d > TENSOR_TOL:
            failures.append(f"{path}: tensor differs by {d:.3g} > {TENSOR_TOL}")
    ref_x = np.stack(ref_x)

    # the answers: two checkpoint forms, every image through the first, the
    # 16-bit one and a colour one through the second
    for form, seed, idx in (("state_dict", 21, range(len(images))),
                            ("pickled model", 22, [len(images) - 1, len(GRAY)])):
        m = convert_check.random_densenet(18, 1, seed)
        thr = torch.rand(18, generator=torch.Generator().manual_seed(seed)) * 0.8 + 0.1
        thr[UNTRAINED] = float("nan")
        src = os.path.join(a.work, f"xrv{seed}.pt")
        if form == "state_dict":
            sd = dict(m.state_dict())
            sd["op_threshs"] = thr
            torch.save(sd, src)
        else:
            m.op_threshs = thr
            torch.save(m, src)
        dst = os.path.join(a.work, f"xrv{seed}.safetensors")
        subprocess.run([sys.executable, TOOL, "--preset", "xrv", src, dst], check=True)
        names = json.loads(chexref.read_safetensors(dst)[1]["labels"])
        idx = list(idx)
        with torch.no_grad():
            pt = xrvref.XrvDenseNet(m, thr)(torch.from_numpy(ref_x[idx])).numpy()
        r = subprocess.run([a.chex, "classify", "--model", dst, "--threads", "2",
                            "--png16-scaling", "full"] + [images[i][0] for i in idx],
                           capture_output=True, text=True)
        if r.returncode != 0:
            failures.append(f"{form}: chex classify failed: {r.stderr.strip()}")
            continue
        answers = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        if len(answers) != len(idx):
            failures.append(f"{form}: {len(answers)} answers for {len(idx)} images")
        want_untrained = [names[k] for k in UNTRAINED]
        worst = 0.0
        for i, ans in enumerate(answers):
            preds = {p["label"]: p["probability"] for p in ans["predictions"]}
            if ans.get("untrained_labels") != want_untrained:
                failures.append(f"{form} {images[idx[i]][0]}: untrained_labels "
                                f"{ans.get('untrained_labels')} != {want_untrained}")
            for k, name in enumerate(names):
                if k in UNTRAINED:
                    if name in preds:
                        failures.append(f"{form}: untrained label {name} in predictions")
                elif name not in preds:
                    failures.append(f"{form}: trained label {name} missing from predictions")
                else:
                    worst = max(worst, abs(preds[name] - float(pt[i, k])))
        print(f"{form:14s} {len(answers)} images: max |p_chexd - p_xrv| = {worst:.3g}; "
              f"untrained {want_untrained} absent from predictions")
        if worst > PROB_TOL:
            failures.append(f"{form}: probabilities differ by {worst:.3g} > {PROB_TOL}")

    serve_and_evaluate(a, os.path.join(a.work, "xrv21.safetensors"), images, failures)
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0



def serve_and_evaluate(a, model, images, failures):
    """chexd's /v1/model and CAM label choice, and `chex evaluate`, on the
    weights with untrained labels."""
    names = json.loads(chexref.read_safetensors(model)[1]["labels"])
    untrained = [names[k] for k in UNTRAINED]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    log = open(os.path.join(a.work, "chexd.log"), "w")
    d = subprocess.Popen([a.chexd, "--model", model, "--listen", "127.0.0.1", "--port", str(port),
                          "--threads", "2"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # until it answers (or exits)
            if d.poll() is not None:
                failures.append(f"chexd exited {d.returncode}: see {log.name}")
                return
            try:
                urllib.request.urlopen(url + "/healthz", timeout=5).read()
                break
            except OSError:
                time.sleep(0.1)
        info = json.load(urllib.request.urlopen(url + "/v1/model", timeout=30))
        out = info.get("outputs", {})
        if out.get("probability") != "op_norm" or out.get("untrained_labels") != untrained \
                or "operating point" not in out.get("meaning", "") \
                or sorted(out.get("operating_points", {})) != sorted(set(names) - set(untrained)):
            failures.append(f"/v1/model outputs wrong: {out}")
        body = open(images[0][0], "rb").read()

        def predict(query):
            req = urllib.request.Request(url + "/v1/predict" + query, data=body,
                                         headers={"Content-Type": "image/png"})
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    return r.status, json.load(r)
            except urllib.error.HTTPError as e:
                return e.code, json.load(e)

        st, j = predict("?top=18&cam=top")
        got = [p["label"] for p in j.get("predictions", [])]
        if st != 200 or len(got) != 15 or set(got) & set(untrained) or \
                j.get("cam", {}).get("label") != got[0]:
            failures.append(f"?top=18&cam=top: {st} {got} cam {j.get('cam', {}).get('label')}")
        st, j = predict("?cam=" + untrained[1])
        msg = j.get("error", {}).get("message", "")
        if st != 400 or "not trained" not in msg:
            failures.append(f"?cam={untrained[1]}: {st} {j}")
        print(f"chexd: /v1/model outputs op_norm, untrained {out.get('untrained_labels')}; "
              f"?top=18 gives {len(got)} labels, cam=top -> {got[:1]}; ?cam={untrained[1]} -> "
              f"{st}: {msg}")
    finally:
        d.terminate()
        d.wait(timeout=60)
        log.close()

    # chex evaluate: untrained labels are not columns, not evaluated, named
    lab = os.path.join(a.work, "labels.csv")
    with open(lab, "w") as f:
        f.write("Image Index,Effusion,Infiltration\n")
        for i, (path, _, _) in enumerate(images[:6]):
            f.write(f"{os.path.basename(path)},{i % 2},{(i + 1) % 2}\n")
    out_dir = os.path.join(a.work, "eval")
    r = subprocess.run([a.chex, "evaluate", "--model", model, "--labels", lab, "--threads", "2",
                        "--out", out_dir, a.xrays], capture_output=True, text=True)
    if r.returncode != 0:
        failures.append(f"chex evaluate exit {r.returncode}: {r.stderr.strip()[-300:]}")
        return
    m = json.load(open(os.path.join(out_dir, "metrics.json")))
    header = open(os.path.join(out_dir, "predictions.csv")).readline().strip().split(",")
    evaluated = [x["label"] for x in m["labels"]]
    if m.get("untrained_labels") != untrained or set(evaluated) & set(untrained) or \
            any("prob_" + u in header for u in untrained) or len(header) != 1 + 15 or \
            m["model"].get("probability") != "op_norm":
        failures.append(f"chex evaluate: untrained {m.get('untrained_labels')}, labels "
                        f"{evaluated}, columns {header}")
    print(f"chex evaluate: {len(header) - 1} prediction columns, metrics for "
          f"{len(evaluated)} labels, untrained_labels {m.get('untrained_labels')}")


if __name__ == "__main__":
    sys.exit(main())
