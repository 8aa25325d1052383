#!/usr/bin/env bash
# bin/chex classify prints the daemon's JSON schema (same probabilities), exit 1
# when an image fails (its error line printed); bin/chex bench prints figures.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PYTHONPATH=$ROOT/tests/integration

imgs=("$DATA/00000001_000.png" "$DATA/16747_3_1.jpg" "$DATA/cr-mono1-10-chest.dcm")
"$CHEX" classify --model "$DEMO" --threshold 0.5 "${imgs[@]}" >"$TMPD/cli.jsonl" || fail "classify exit $?"
[ "$(wc -l <"$TMPD/cli.jsonl")" = 3 ] || fail "wanted 3 lines: $(cat "$TMPD/cli.jsonl")"

start_daemon cli
for i in 0 1 2; do
  curl -s -H 'Content-Type: application/octet-stream' --data-binary @"${imgs[$i]}" \
    "$URL/v1/predict?threshold=0.5" >"$TMPD/d$i.json"
done
stop_daemon "$PID" || fail "exit status"
"$PY" - "$TMPD" <<'PY' || fail "CLI and daemon answers differ"
import json, os, sys
from chexclient import check_answer
d = sys.argv[1]
lines = [json.loads(l) for l in open(os.path.join(d, "cli.jsonl"))]
for i, cli in enumerate(lines):
    srv = json.load(open(os.path.join(d, "d%d.json" % i)))
    labels = [p["label"] for p in srv["predictions"]]
    check_answer(cli, labels, threshold=0.5)
    assert set(cli) - {"file"} == set(srv), (set(cli), set(srv))
    assert cli["predictions"] == srv["predictions"], (cli["predictions"], srv["predictions"])
    assert cli["input"] == srv["input"] and cli["model"] == srv["model"]
    assert cli.get("dicom") == srv.get("dicom")
PY
ok "chex classify: same schema and probabilities as the daemon (PNG, JPEG, DICOM)"

rc=0
"$CHEX" classify --model "$DEMO" --top 2 "$DATA/h0001.png" "$DATA/PROVENANCE.md" "$TMPD/missing.png" \
  >"$TMPD/mixed.jsonl" || rc=$?
[ "$rc" = 1 ] || fail "wanted exit 1 with a failing image, got $rc"
"$PY" - "$TMPD/mixed.jsonl" <<'PY' || fail "mixed: $(cat "$TMPD/mixed.jsonl")"
import json, sys
a, b, c = [json.loads(l) for l in open(sys.argv[1])]
assert len(a["predictions"]) == 2 and a["file"].endswith("h0001.png"), a
assert b["error"]["code"] == "unsupported_format" and b["file"].endswith("PROVENANCE.md"), b
assert c["error"]["code"] == "io_error" and c["request_id"], c
PY
ok "chex classify: failing images get an error line, exit 1"

rc=0; "$CHEX" classify --model "$DEMO" --top 99 "$DATA/h0001.png" 2>"$TMPD/err" || rc=$?
[ "$rc" = 2 ] && grep -q top "$TMPD/err" || fail "bad --top: rc=$rc"
rc=0; "$CHEX" classify --model "$TMPD/none" "$DATA/h0001.png" 2>"$TMPD/err" || rc=$?
[ "$rc" = 2 ] || fail "missing model: rc=$rc"
rc=0; "$CHEX" frobnicate 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "unknown command: rc=$rc"
"$CHEX" --version | grep -q '^chex [0-9]' || fail "--version"
"$CHEX" --help | grep -q 'chex classify' || fail "--help"
ok "chex usage errors exit 2; --help, --version"

"$CHEX" bench --model "$DEMO" --runs 3 --batch 1 >"$TMPD/bench.json" || fail "bench"
"$PY" - "$TMPD/bench.json" <<'PY' || fail "bench output: $(cat "$TMPD/bench.json")"
import json, sys
j = json.load(open(sys.argv[1]))
assert set(j) == {"batch", "threads", "isa", "precision", "median_ms", "p90_ms", "images_per_s", "gflops", "peak_rss_mb"}, j
assert j["batch"] == 1 and j["median_ms"] > 0 and j["p90_ms"] >= j["median_ms"] and j["images_per_s"] > 0, j
assert j["isa"] in ("avx512", "avx2", "generic") and j["peak_rss_mb"] > 0 and j["precision"] == "fp32", j
PY
ok "chex bench: $(cat "$TMPD/bench.json")"
# On a radiograph outside the calibration set: int8's activation scales fit
# radiographs, not the default pseudo-random input.
"$CHEX" bench --model "$DEMO" --runs 3 --batch 2 --precision int8 \
  --image tests/data/siim-pneumothorax-sample.dcm >"$TMPD/bench8.json" || fail "bench int8"
"$PY" - "$TMPD/bench8.json" <<'PY' || fail "bench int8 output: $(cat "$TMPD/bench8.json")"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["precision"] == "int8" and j["batch"] == 2 and j["median_ms"] > 0, j
assert 0 < j["max_prob_diff_fp32"] <= 0.02, j
PY
ok "chex bench --precision int8: $(cat "$TMPD/bench8.json")"
rc=0; "$CHEX" bench --model "$DEMO" --precision fp16 2>"$TMPD/err" || rc=$?
[ "$rc" = 2 ] && grep -q precision "$TMPD/err" || fail "bench --precision fp16: rc=$rc $(cat "$TMPD/err")"
rc=0; "$CHEX" bench --isa sparc 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "bench --isa sparc: rc=$rc"
# chex calibrate: a calibrated copy that int8 accepts; errors leave no file.
"$BUILD/tools/make_demo_weights" "$TMPD/raw.safetensors" || fail "make_demo_weights"
"$CHEX" calibrate --model "$TMPD/raw.safetensors" --out "$TMPD/cal.safetensors" \
  "$DATA/00000001_000.png" "$DATA/16747_3_1.jpg" "$DATA/cr-mono1-10-chest.dcm" 2>"$TMPD/err" ||
  fail "calibrate: $(cat "$TMPD/err")"
grep -q "3 images, 119 int8 convolutions" "$TMPD/err" || fail "calibrate summary: $(cat "$TMPD/err")"
"$CHEX" classify --model "$TMPD/cal.safetensors" --precision int8 "$DATA/h0001.png" >/dev/null ||
  fail "int8 on the calibrated copy"
# Calibrating a calibrated file replaces its int8 tensors (GPTQ weights, scales).
"$CHEX" calibrate --model "$TMPD/cal.safetensors" --out "$TMPD/cal2.safetensors" \
  "$DATA/h0001.png" 2>"$TMPD/err" || fail "recalibrate: $(cat "$TMPD/err")"
"$PY" - "$TMPD/cal2.safetensors" <<'PY' || fail "recalibrated file"
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
q = [k for k in h if ".int8_" in k]
assert len(q) == 3 * 119 and len(h) - 1 == 606 + 3 * 119, (len(q), len(h))
assert h["features.denseblock1.denselayer1.conv2.int8_weight"]["dtype"] == "I8"
assert h["features.denseblock1.denselayer1.conv2.int8_weight"]["shape"] == [32, 128, 3, 3]
assert '"images":1' in h["__metadata__"]["int8_calibration"], h["__metadata__"]
PY
"$CHEX" classify --model "$TMPD/cal2.safetensors" --precision int8 "$DATA/h0001.png" >/dev/null ||
  fail "int8 on the recalibrated copy"
rc=0; "$CHEX" calibrate --model "$TMPD/raw.safetensors" --out "$TMPD/bad.safetensors" \
  "$DATA/00000001_000.png" "$TMPD/none.png" 2>"$TMPD/err" || rc=$?
[ "$rc" = 1 ] && grep -q "none.png" "$TMPD/err" && [ ! -e "$TMPD/bad.safetensors" ] ||
  fail "calibrate with a missing image: rc=$rc $(cat "$TMPD/err"), file left: $(ls "$TMPD")"
rc=0; "$CHEX" calibrate --model "$TMPD/raw.safetensors" "$DATA/h0001.png" 2>"$TMPD/err" || rc=$?
[ "$rc" = 2 ] && grep -q -- "--out" "$TMPD/err" || fail "calibrate without --out: rc=$rc"
ok "chex calibrate: calibrated copy (GPTQ int8 tensors) runs int8, recalibrates; a bad image exits 1 leaving no file"
"$CHEX" evaluate --help >"$TMPD/eval" || fail "chex evaluate --help"
grep -q '^usage: chex evaluate' "$TMPD/eval" || fail "evaluate usage: $(head -3 "$TMPD/eval")"
rc=0; "$CHEX" evaluate 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "chex evaluate without --labels: rc=$rc"
ok "chex evaluate is dispatched to the evaluator"
