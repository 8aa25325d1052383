#!/usr/bin/env bash
# chexd with precision int8 on the (make-calibrated) demo weights: /v1/model
# says int8, /v1/predict answers what `chex classify --precision int8` does for
# the same radiographs, close to (not equal to) the fp32 daemon's answer, and
# batches of several images give each image's single answer.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

imgs=("$DATA/00000001_000.png" "$DATA/h0001.png" "$DATA/16747_3_1.jpg" "$DATA/siim-pneumothorax-sample.dcm")
"$CHEX" classify --model "$DEMO" --precision int8 "${imgs[@]}" >"$TMPD/cli8.jsonl" || fail "chex classify int8"
"$CHEX" classify --model "$DEMO" "${imgs[@]}" >"$TMPD/cli32.jsonl" || fail "chex classify fp32"

start_daemon int8 --precision int8 --max-batch 4 --batch-window-ms 50
curl -sf "$URL/v1/model" >"$TMPD/model.json" || fail "/v1/model"
[ "$(json_get "$TMPD/model.json" 'j["precision"]')" = int8 ] || fail "/v1/model: $(cat "$TMPD/model.json")"
ok "/v1/model reports precision int8"

# The same images, concurrently (the worker batches them).
cpids=()
for i in "${!imgs[@]}"; do
  curl -sf -H 'Content-Type: application/octet-stream' --data-binary @"${imgs[$i]}" \
    "$URL/v1/predict" >"$TMPD/d$i.json" &
  cpids+=($!)
done
for p in "${cpids[@]}"; do wait "$p" || fail "POST failed"; done
stop_daemon "$PID" || fail "int8 daemon exit status"

"$PY" - "$TMPD" "${#imgs[@]}" <<'PY' || fail "int8 answers"
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
probs = lambda j: [p["probability"] for p in j["predictions"]]
cli8 = [probs(json.loads(l)) for l in open(f"{d}/cli8.jsonl")]
cli32 = [probs(json.loads(l)) for l in open(f"{d}/cli32.jsonl")]
worst_cli, worst_32 = 0.0, 0.0
for i in range(n):
    p = probs(json.load(open(f"{d}/d{i}.json")))
    worst_cli = max(worst_cli, max(abs(a - b) for a, b in zip(p, cli8[i])))
    worst_32 = max(worst_32, max(abs(a - b) for a, b in zip(p, cli32[i])))
print(f"daemon int8 vs chex int8: {worst_cli:.2e}; vs fp32: {worst_32:.4f}")
assert worst_cli <= 1e-5, worst_cli
assert 0.0 < worst_32 <= 0.02, worst_32
PY
ok "daemon int8 answers = chex classify --precision int8, within 0.02 of fp32"
