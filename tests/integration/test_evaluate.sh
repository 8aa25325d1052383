#!/usr/bin/env bash
# chex evaluate end to end: the labelled radiographs of ../shared/data/xrays
# through the demo model (predictions.csv, metrics.json, ROC plots, demo
# warning); the same AUROCs again from the written predictions.csv; failed and
# missing images listed without stopping the run; usage errors.
# Needs BIN, MODELS, PY (tests/run_all.sh exports them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BIN=${BIN:-bin}
MODELS=${MODELS:-models}
PY=${PY:-/usr/bin/python3}
CHEX=$BIN/chex
DEMO=$MODELS/chexnet-demo.safetensors
XRAYS=../shared/data/xrays
TMPD=$(mktemp -d "${TMPDIR:-/tmp}/chex-evaluate.XXXXXX")
trap 'rm -rf "$TMPD"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok - $*"; }

[ -f "$XRAYS/labels.csv" ] || fail "$XRAYS/labels.csv missing (shared radiographs beside the checkout)"
LABELS=$XRAYS/labels.csv
if [ -n "${CHEX_ASAN:-}" ]; then
  # under ASan the network is ~10x slower: the first 16 listed images
  head -17 "$XRAYS/labels.csv" > "$TMPD/labels16.csv"
  LABELS=$TMPD/labels16.csv
fi
NLISTED=$(($(wc -l < "$LABELS") - 1))

# 1. the labelled folder through the demo model
"$CHEX" evaluate --labels "$LABELS" --model "$DEMO" --out "$TMPD/run" --plots --threads 2 "$XRAYS" \
  > "$TMPD/table.txt" 2> "$TMPD/stderr.txt" || { cat "$TMPD/stderr.txt" >&2; fail "evaluate exit $?"; }
cat "$TMPD/table.txt"
grep -q '^WARNING: demo weights' "$TMPD/table.txt" || fail "no demo warning in the table"
grep -Eq '^mean AUROC over [0-9]+ evaluated labels \(of 14\): [01]\.[0-9]{4}$' "$TMPD/table.txt" \
  || fail "no mean AUROC line"
grep -q "classified $NLISTED of $NLISTED images" "$TMPD/stderr.txt" || { cat "$TMPD/stderr.txt" >&2; fail "not every image classified"; }
ok "evaluate over $NLISTED labelled radiographs: table with mean AUROC and demo warning"

# predictions.csv: exactly the layout of jrzech_preds.csv, one row per image
[ "$(head -1 "$TMPD/run/predictions.csv")" = "$(head -1 tests/data/reference/jrzech_preds.csv)" ] \
  || fail "predictions.csv header: $(head -1 "$TMPD/run/predictions.csv")"
[ "$(($(wc -l < "$TMPD/run/predictions.csv") - 1))" = "$NLISTED" ] || fail "predictions.csv rows"
ok "predictions.csv: Image Index + 14 prob_ columns, $NLISTED rows"

"$PY" - "$TMPD/run" "$NLISTED" <<'PYEOF'
import csv, glob, json, math, os, sys
from PIL import Image
run, nlisted = sys.argv[1], int(sys.argv[2])
m = json.load(open(os.path.join(run, "metrics.json")))
assert m["demo"] is True and m["model"]["demo"] is True, m["model"]
assert m["warning"].startswith("WARNING: demo weights"), m.get("warning")
assert m["mode"] == "images" and m["labels_layout"] == "findings"
assert m["n_listed"] == nlisted and m["n_images"] == nlisted and m["n_failed"] == 0 and m["failures"] == []
assert m["ci_method"] == "delong" and len(m["labels"]) == 14 and m["n_labels"] == 14
ev = [e for e in m["labels"] if e["evaluated"]]
assert m["n_evaluated"] == len(ev) > 0
assert abs(m["mean_auroc"] - sum(e["auroc"] for e in ev) / len(ev)) < 1e-12
for e in m["labels"]:
    assert e["n_pos"] + e["n_neg"] == nlisted, e
    if e["evaluated"]:
        assert 0.0 <= e["auroc"] <= 1.0 and e["n_pos"] > 0 and e["n_neg"] > 0
    else:
        # never 0.5: a label without positives is "not evaluated"
        assert e["auroc"] is None and e["n_pos"] == 0 and e["reason"] == "no positive case", e
rows = list(csv.DictReader(open(os.path.join(run, "predictions.csv"))))
for r in rows:
    for k, v in r.items():
        if k != "Image Index":
            assert 0.0 <= float(v) <= 1.0, (r["Image Index"], k, v)
plots = sorted(glob.glob(os.path.join(run, "roc_*.png")))
assert len(plots) == len(ev), (len(plots), len(ev))
for e in ev:
    p = os.path.join(run, f"roc_{e['label']}.png")
    im = Image.open(p)
    im.load()
    assert im.size == (640, 640) and im.mode == "RGB", (p, im.size, im.mode)
    # the red demo notice is drawn in the legend
    assert (0xC0, 0x20, 0x20) in {c for _, c in im.getcolors(1 << 16)}, p
print(f"ok - metrics.json: demo, {len(ev)} labels evaluated, mean AUROC {m['mean_auroc']:.4f}; "
      f"{len(plots)} ROC plots 640x640 with the demo notice")
PYEOF

# 2. the same metrics from the written predictions file
"$CHEX" evaluate --predictions "$TMPD/run/predictions.csv" --labels "$LABELS" --out "$TMPD/again" \
  > /dev/null 2>&1 || fail "evaluate --predictions exit $?"
"$PY" - "$TMPD/run/metrics.json" "$TMPD/again/metrics.json" <<'PYEOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for x, y in zip(a["labels"], b["labels"]):
    assert x["label"] == y["label"] and x["evaluated"] == y["evaluated"], (x, y)
    if x["evaluated"]:
        assert x["auroc"] == y["auroc"] and x["n_pos"] == y["n_pos"], (x, y)
assert a["mean_auroc"] == b["mean_auroc"]
print("ok - --predictions on the written predictions.csv gives the same AUROCs")
PYEOF

# 3. failed and missing images are listed and do not stop the run; a plain
#    0/1 labels file; labels the file lacks are "not evaluated"; an absolute
#    image name; model and threads from chexd's config file
mkdir "$TMPD/imgs"
cp tests/data/00000001_000.png tests/data/00000002_000.png tests/data/16747_3_1.jpg \
   tests/data/cr-mono1-10-chest.dcm "$TMPD/imgs/"
head -c 5000 tests/data/00013911_000.png > "$TMPD/imgs/broken.png"
cat > "$TMPD/plain.csv" <<'CSV'
path,Mass,Cardiomegaly,Not_A_Model_Label
00000001_000.png,1,1,0
broken.png,1,0,0
00000002_000.png,0,0,1
missing.png,0,1,1
16747_3_1.jpg,1,,0
CSV
echo "$TMPD/imgs/cr-mono1-10-chest.dcm,0,-1,0" >> "$TMPD/plain.csv"
case $DEMO in /*) demo_abs=$DEMO ;; *) demo_abs=$PWD/$DEMO ;; esac
printf '{"model": "%s", "threads": 1}\n' "$demo_abs" > "$TMPD/chexd.json"
# --batch 3: failures leave holes that later images fill before a forward pass
"$CHEX" evaluate --labels "$TMPD/plain.csv" --config "$TMPD/chexd.json" --batch 3 --out "$TMPD/fail" "$TMPD/imgs" \
  > "$TMPD/fail.txt" 2> "$TMPD/fail.err" || { cat "$TMPD/fail.err" >&2; fail "run with failures exit $?"; }
grep -q '^evaluate: broken.png (line 3): ' "$TMPD/fail.err" || { cat "$TMPD/fail.err" >&2; fail "broken.png not listed"; }
grep -q '^evaluate: missing.png (line 5): No such file or directory$' "$TMPD/fail.err" || fail "missing.png not listed"
grep -q 'classified 4 of 6 images' "$TMPD/fail.err" || fail "4 of 6"
grep -q 'model chexnet-demo (14 labels), 1 thread$' "$TMPD/fail.err" || fail "config file not used"
"$PY" - "$TMPD/fail" "$TMPD/run" <<'PYEOF'
import csv, json, os, sys
m = json.load(open(os.path.join(sys.argv[1], "metrics.json")))
assert m["n_failed"] == 2 and m["n_images"] == 4 and m["labels_layout"] == "columns", m
assert sorted(f["image"] for f in m["failures"]) == ["broken.png", "missing.png"]
lab = {e["label"]: e for e in m["labels"]}
assert lab["Mass"]["evaluated"] and (lab["Mass"]["n_pos"], lab["Mass"]["n_neg"]) == (2, 2)
assert lab["Mass"]["n_unknown"] == 2
# Cardiomegaly: 1 positive, 1 negative among scored with known truth (blank, -1 left out)
assert lab["Cardiomegaly"]["evaluated"] and (lab["Cardiomegaly"]["n_pos"], lab["Cardiomegaly"]["n_neg"]) == (1, 1)
assert lab["Effusion"]["evaluated"] is False and lab["Effusion"]["auroc"] is None
assert lab["Effusion"]["reason"] == "no such label in the labels file"
assert m["n_evaluated"] == 2
rows = [r["Image Index"] for r in csv.DictReader(open(os.path.join(sys.argv[1], "predictions.csv")))]
assert rows[:3] == ["00000001_000.png", "00000002_000.png", "16747_3_1.jpg"], rows
assert len(rows) == 4 and rows[3].endswith("/imgs/cr-mono1-10-chest.dcm"), rows
# 00000002_000.png is also one of the shared radiographs: same scores in both runs
a = {r["Image Index"]: r for r in csv.DictReader(open(os.path.join(sys.argv[1], "predictions.csv")))}
b = {r["Image Index"]: r for r in csv.DictReader(open(os.path.join(sys.argv[2], "predictions.csv")))}
if "00000002_000.png" in b:
    for k, v in a["00000002_000.png"].items():
        if k != "Image Index":
            assert abs(float(v) - float(b["00000002_000.png"][k])) < 1e-5, (k, v, b["00000002_000.png"][k])
print("ok - broken and missing images listed, run completed on PNG, JPEG and DICOM; "
      "labels missing from the file not evaluated")
PYEOF

# 4. usage and input errors: clear message, exit status 2 / 1, nothing else
expect() { # status, stderr pattern, args...
  local want=$1 pat=$2; shift 2
  local rc=0
  "$CHEX" evaluate "$@" > "$TMPD/e.out" 2> "$TMPD/e.err" || rc=$?
  [ "$rc" = "$want" ] || fail "evaluate $*: exit $rc, want $want ($(cat "$TMPD/e.err"))"
  grep -q -- "$pat" "$TMPD/e.err" || fail "evaluate $*: stderr '$(cat "$TMPD/e.err")' lacks '$pat'"
}
expect 2 "--labels FILE is required" "$XRAYS"
expect 2 "unknown option '--bogus'" --bogus --labels "$LABELS" "$XRAYS"
expect 2 "want delong or bootstrap" --ci magic --labels "$LABELS" "$XRAYS"
expect 2 "want exactly one IMAGE_DIR" --labels "$LABELS"
expect 2 "no IMAGE_DIR is taken" --predictions "$TMPD/run/predictions.csv" --labels "$LABELS" "$XRAYS"
expect 1 "No such file or directory" --labels "$TMPD/nope.csv" --model "$DEMO" "$XRAYS"
expect 1 "model $TMPD/nope.safetensors" --labels "$LABELS" --model "$TMPD/nope.safetensors" "$XRAYS"
echo '{"threads": "many"}' > "$TMPD/bad.json"
expect 1 "config: threads: expected an integer" --config "$TMPD/bad.json" --labels "$LABELS" "$XRAYS"
expect 2 "make no sense with --predictions" --predictions "$TMPD/run/predictions.csv" --labels "$LABELS" --threads 2
printf 'Image Index,prob_Mass\na.png,0.5\na.png,0.7\n' > "$TMPD/dup.csv"
expect 1 "line 3: image 'a.png' already listed on line 2" --predictions "$TMPD/dup.csv" --labels "$LABELS"
"$CHEX" evaluate --help | grep -q 'usage: chex evaluate' || fail "--help"
ok "usage errors exit 2, unreadable inputs exit 1, each with a message"
