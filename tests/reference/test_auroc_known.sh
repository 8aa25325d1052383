#!/usr/bin/env bash
# Known answer through the command line: `chex evaluate --predictions` on
# jrzech/reproduce-chexnet's predictions for 22,433 NIH test images with the
# NIH labels (gzip) reproduces that project's 14 published AUROCs to 1e-6
# (tests/data/reference/PROVENANCE.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BIN=${BIN:-bin}
PY=${PY:-/usr/bin/python3}
REF=tests/data/reference
TMPD=$(mktemp -d "${TMPDIR:-/tmp}/chex-auroc.XXXXXX")
trap 'rm -rf "$TMPD"' EXIT

"$BIN/chex" evaluate --predictions "$REF/jrzech_preds.csv" \
  --labels "$REF/Data_Entry_2017_v2020.csv.gz" --out "$TMPD/out" --plots > "$TMPD/table.txt"
cat "$TMPD/table.txt"
grep -q '^mean AUROC over 14 evaluated labels (of 14): 0.8383$' "$TMPD/table.txt" \
  || { echo "FAIL: mean AUROC line" >&2; exit 1; }
"$PY" - "$TMPD/out/metrics.json" "$REF/jrzech_aucs.csv" <<'PYEOF'
import csv, json, sys
m = json.load(open(sys.argv[1]))
ref = {r["label"]: float(r["auc"]) for r in csv.DictReader(open(sys.argv[2]))}
got = {e["label"]: e for e in m["labels"]}
assert len(ref) == 14 and set(got) == set(ref), (sorted(got), sorted(ref))
worst = 0.0
for label, want in ref.items():
    e = got[label]
    assert e["evaluated"], label
    d = abs(e["auroc"] - want)
    worst = max(worst, d)
    assert d <= 1e-6, f"{label}: {e['auroc']!r} != published {want!r}"
    assert e["ci_low"] < e["auroc"] < e["ci_high"], label
    assert e["n_pos"] + e["n_neg"] == 22433, label
assert got["Atelectasis"]["n_pos"] == 2423 and got["Hernia"]["n_pos"] == 42
assert m["n_images"] == 22433 and m["n_unlabelled"] == 0 and m["ci_method"] == "delong"
assert abs(m["mean_auroc"] - sum(ref.values()) / 14) < 1e-9
print(f"ok - 14 AUROCs equal jrzech_aucs.csv (largest difference {worst:.1e})")
PYEOF
# the 14 plots are real PNGs of the documented size
n=$(ls "$TMPD/out"/roc_*.png | wc -l)
[ "$n" = 14 ] || { echo "FAIL: $n plots, want 14" >&2; exit 1; }
"$PY" -c 'import sys; from PIL import Image; im = Image.open(sys.argv[1]); im.load(); assert im.size == (640, 640), im.size' \
  "$TMPD/out/roc_Hernia.png"
echo "ok - 14 ROC plots"

# predictions naming images with a folder ("images/x.png") still match the
# NIH labels by file name; --out folders are created with their parents
sed '2,$s|^|images/|' "$REF/jrzech_preds.csv" > "$TMPD/prefixed.csv"
"$BIN/chex" evaluate --predictions "$TMPD/prefixed.csv" --labels "$REF/Data_Entry_2017_v2020.csv.gz" \
  --out "$TMPD/a/b/c" > "$TMPD/table2.txt" 2> /dev/null
grep -q '^mean AUROC over 14 evaluated labels (of 14): 0.8383$' "$TMPD/table2.txt" \
  || { echo "FAIL: prefixed image names" >&2; exit 1; }
[ -f "$TMPD/a/b/c/metrics.json" ] || { echo "FAIL: nested --out" >&2; exit 1; }
echo "ok - image names with a folder prefix match by file name; nested --out created"
