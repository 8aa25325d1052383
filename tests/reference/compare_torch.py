"""C network vs torchvision densenet121 on the same weights and inputs.

Asserts logits max |diff| <= 1e-4 and probabilities <= 1e-5 for the whole
network, and every stage within 1e-4 relative to its largest value, so a
failure points at its layer. Prints the worst differences."""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chexref  # noqa: E402

LOGIT_TOL, PROB_TOL, STAGE_RTOL = 1e-4, 1e-5, 1e-4
XRAYS = ["00000001_000.png", "00000047_005.png", "00013911_000.png"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--xrays", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    torch.set_num_threads(2)
    model, meta = chexref.torch_model(a.model)
    c = int(meta.get("input_channels", 3))
    xr = [chexref.radiograph_tensor(os.path.join(a.xrays, f), meta, c) for f in XRAYS]
    g = torch.Generator().manual_seed(1234)
    rnd = [torch.randn(c, 224, 224, generator=g).numpy() for _ in range(2)]
    inputs = {
        "xray-b1": np.stack(xr[:1]),
        "random-b1": np.stack(rnd[:1]),
        "mixed-b4": np.stack(xr + rnd[1:]),
        # with 2 threads: two images image-parallel, the third on both threads
        "mixed-b3": np.stack([rnd[1]] + xr[:2]),
    }
    ref = {k: chexref.torch_forward(model, x) for k, x in inputs.items()}
    isas = os.popen(f"{a.driver} --isas").read().split()
    print(f"ISA paths on this CPU: {' '.join(isas)}")
    failures, worst = [], {"logits": 0.0, "probs": 0.0}
    print(f"{'run':40s} {'logits':>10s} {'probs':>10s}  worst stage (rel)")
    runs = [(k, isa, t, False, "") for isa in isas for t in (1, 2) for k in inputs]
    # AVX-512 without its default Winograd F(4x4) 3x3 path: direct (CHEXD_WINOGRAD=0)
    # and F(2x2) (CHEXD_WINOGRAD=2)
    wino_env = {"direct": "0", "f2x2": "2"}
    if "avx512" in isas:
        runs += [(k, "avx512", t, False, v) for v in wino_env for t in (1, 2) for k in inputs]
    runs.append(("xray-b1", "naive", 1, True, ""))
    for key, isa, threads, naive, variant in runs:
        x = inputs[key]
        lt, pt, st = ref[key]
        tag = f"{key}-{isa}{'-' + variant if variant else ''}-t{threads}"
        env = {"CHEXD_WINOGRAD": wino_env[variant]} if variant else None
        lc, pc, sc, info = chexref.run_c(a.driver, a.model, x, a.work, tag, threads=threads,
                                         isa=None if naive else isa, reference=naive,
                                         extra_env=env)
        if info["isa"] != isa or info["threads"] != threads:
            failures.append(f"{tag}: driver ran isa {info['isa']} threads {info['threads']}")
        dl = float(np.abs(lc - lt).max())
        dp = float(np.abs(pc - pt).max())
        worst["logits"], worst["probs"] = max(worst["logits"], dl), max(worst["probs"], dp)
        stage_worst, stage_name = 0.0, ""
        for s in chexref.STAGES:
            r = st[s].ravel()
            d = float(np.abs(sc[s] - r).max()) / max(1.0, float(np.abs(r).max()))
            if d > STAGE_RTOL:
                failures.append(f"{tag}: stage {s} relative diff {d:.3g} > {STAGE_RTOL}")
            if d > stage_worst:
                stage_worst, stage_name = d, s
        if dl > LOGIT_TOL:
            failures.append(f"{tag}: logits max diff {dl:.3g} > {LOGIT_TOL}")
        if dp > PROB_TOL:
            failures.append(f"{tag}: probabilities max diff {dp:.3g} > {PROB_TOL}")
        print(f"{tag:40s} {dl:10.3g} {dp:10.3g}  {stage_name} {stage_worst:.3g}")
    print(f"worst over all runs: logits {worst['logits']:.3g} (tol {LOGIT_TOL}), "
          f"probabilities {worst['probs']:.3g} (tol {PROB_TOL})")
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
