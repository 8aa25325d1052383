#!/usr/bin/env bash
# The demo model is reproducible: built again from the same inputs by this
# build's tools (tools/make_demo_model.sh, as `make` does), once on 1 thread
# and once on 2, it is byte for byte $MODELS/chexnet-demo.safetensors, and it
# names the fp32 path its calibration ran on.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
: "${BUILD:=build}" "${BIN:=bin}" "${MODELS:=models}" "${PY:=/usr/bin/python3}"
work=$(mktemp -d "${TMPDIR:-/tmp}/chex-repro.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
want=$(sha256sum "$MODELS/chexnet-demo.safetensors" | cut -d' ' -f1)
echo "$MODELS/chexnet-demo.safetensors: $want"
for t in 1 2; do
  OMP_NUM_THREADS=$t bash tools/make_demo_model.sh "$BUILD/tools/make_demo_weights" "$BIN/chex" \
    "$work/demo$t.safetensors" --threads "$t" 2>"$work/err$t" || fail "build on $t thread(s): $(cat "$work/err$t")"
  got=$(sha256sum "$work/demo$t.safetensors" | cut -d' ' -f1)
  echo "rebuilt on $t thread(s): $got"
  [ "$got" = "$want" ] || fail "the demo model rebuilt on $t thread(s) differs from $MODELS's"
done
"$PY" - "$work/demo1.safetensors" <<'PY' || fail "int8_calibration metadata"
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    meta = json.loads(f.read(n))["__metadata__"]
info = json.loads(meta["int8_calibration"])
isa, _, conv = info["fp32_path"].partition(", ")
assert isa in ("avx512", "avx2", "generic") and conv.startswith(("direct", "winograd")), info
assert info["images"] == 6 and info["gptq_crops"] == 6, info
print("ok - fp32 path in the metadata:", info["fp32_path"])
PY
echo "ok - the demo model rebuilt on 1 and 2 threads is the same file"
