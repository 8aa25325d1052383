"""chex evaluate --predictions against scikit-learn's roc_auc_score (random and
heavily tied scores, unknown truth and missing scores left out) and its DeLong
standard error against the O(n_pos * n_neg) definition (DeLong et al. 1988).
Usage: test_auroc_sklearn.py CHEX TMPDIR"""
import csv
import json
import os
import subprocess
import sys

import numpy as np
from sklearn.metrics import roc_auc_score

CHEX, TMP = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(20261125)


def delong_naive(s, y):
    x, z = s[y == 1], s[y == 0]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    auc = v10.mean()
    var = v10.var(ddof=1) / len(x) + v01.var(ddof=1) / len(z)
    return auc, np.sqrt(var)


def make_case(name, n, labels):
    """labels: {label: (scores, truth)}; truth -1 = unknown, scores nan = missing."""
    pred = os.path.join(TMP, name + "_pred.csv")
    lab = os.path.join(TMP, name + "_labels.csv")
    names = [f"img{i:05d}.png" for i in range(n)]
    with open(pred, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Image Index"] + ["prob_" + k for k in labels])
        for i in range(n):
            w.writerow([names[i]] + ["" if np.isnan(v[0][i]) else repr(float(v[0][i])) for v in labels.values()])
    with open(lab, "w", newline="") as f:
        w = csv.writer(f)
        # reversed row order and an extra column: matching is by name
        w.writerow(["file"] + list(labels) + ["Patient Age"])
        for i in reversed(range(n)):
            w.writerow([names[i]] + [int(v[1][i]) for v in labels.values()] + [40])
    return pred, lab


def run(pred, lab, out, *extra):
    subprocess.run([CHEX, "evaluate", "--predictions", pred, "--labels", lab, "--out", out, *extra],
                   check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "metrics.json")) as f:
        return {e["label"]: e for e in json.load(f)["labels"]}


def check(name, n, labels):
    pred, lab = make_case(name, n, labels)
    got = run(pred, lab, os.path.join(TMP, name))
    for k, (s, y) in labels.items():
        keep = (~np.isnan(s)) & (y >= 0)
        s2, y2 = s[keep], y[keep].astype(int)
        e = got[k]
        assert e["evaluated"], (name, k, e)
        want = roc_auc_score(y2, s2)
        assert abs(e["auroc"] - want) < 1e-12, (name, k, e["auroc"], want)
        assert e["n_pos"] == int(y2.sum()) and e["n_neg"] == int((1 - y2).sum()), (name, k)
        assert e["n_unknown"] == int((~keep).sum()), (name, k)
        auc, se = delong_naive(s2, y2)
        assert abs(e["se"] - se) <= 1e-9 * se, (name, k, e["se"], se)
        lo, hi = max(0.0, auc - 1.959963984540054 * se), min(1.0, auc + 1.959963984540054 * se)
        assert abs(e["ci_low"] - lo) < 1e-9 and abs(e["ci_high"] - hi) < 1e-9, (name, k)
        print(f"ok - {name}/{k}: AUROC {e['auroc']:.6f} = sklearn, DeLong SE {e['se']:.6f} "
              f"= O(n^2) definition (n_pos {e['n_pos']}, n_neg {e['n_neg']})")
    return pred, lab


def labels_for(n, prev, shift):
    y = (rng.random(n) < prev).astype(float)
    y[:2], y[2:4] = 1, 0
    return y, rng.normal(size=n) + shift * y


# 1. continuous scores, several prevalences and separations
n = 800
cases = {}
for k, (prev, shift) in {"Mass": (0.1, 1.0), "Nodule": (0.3, 0.3), "Edema": (0.5, -0.5)}.items():
    y, s = labels_for(n, prev, shift)
    cases[k] = (1 / (1 + np.exp(-s)), y)
check("random", n, cases)

# 2. heavy ties: 11, 3 and 2 distinct values
n = 1500
cases = {}
for k, levels in {"Atelectasis": 10, "Effusion": 2, "Hernia": 1}.items():
    y, s = labels_for(n, 0.2, 0.8)
    cases[k] = (np.round(np.clip((s + 2) / 5, 0, 1) * levels) / levels, y)
check("tied", n, cases)

# 3. unknown truth (-1) and missing scores are left out; rare positives
n = 3000
y, s = labels_for(n, 0.004, 1.5)
y[rng.random(n) < 0.1] = -1
y[:2] = 1
s = np.round(s, 1)
s[rng.random(n) < 0.05] = np.nan
s[:4] = [0.5, 0.6, 0.1, 0.2]
pred, lab = check("unknowns", n, {"Pneumonia": (s, y)})

# 4. bootstrap: seeded and reproducible, brackets the AUROC, SE close to DeLong's
y, s = labels_for(2000, 0.25, 0.7)
pred, lab = make_case("boot", 2000, {"Mass": (s, y)})
a = run(pred, lab, os.path.join(TMP, "b1"), "--ci", "bootstrap", "--seed", "5")["Mass"]
b = run(pred, lab, os.path.join(TMP, "b2"), "--ci", "bootstrap", "--seed", "5")["Mass"]
c = run(pred, lab, os.path.join(TMP, "b3"), "--ci", "bootstrap", "--seed", "6")["Mass"]
d = run(pred, lab, os.path.join(TMP, "b4"))["Mass"]
assert a == b, "same seed, different bootstrap result"
assert (a["ci_low"], a["ci_high"]) != (c["ci_low"], c["ci_high"]), "seed ignored"
assert a["ci_low"] < a["auroc"] < a["ci_high"] and a["auroc"] == d["auroc"]
assert abs(a["se"] - d["se"]) < 0.1 * d["se"], (a["se"], d["se"])
print(f"ok - bootstrap CI {a['ci_low']:.4f}-{a['ci_high']:.4f} (seed 5, reproducible) vs "
      f"DeLong {d['ci_low']:.4f}-{d['ci_high']:.4f}")
