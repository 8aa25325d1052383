#!/usr/bin/env bash
# tools/int8_sim.py (the torch fake-quant behind docs/PERFORMANCE.md's int8
# numbers) runs on the shared radiographs and its cheapest variant, u8
# activations with exact weights on the test's torch-made checkpoint, gives
# the documented error: not zero (it quantised) and near the 0.02 bound.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
: "${PY:=/usr/bin/python3}"
out=$("$PY" tools/int8_sim.py --seed 7 exact-weights 2>/dev/null)
echo "$out"
"$PY" - "$out" <<'PY'
import re, sys
m = re.match(r"seed 7 exact-weights +worst (\S+) mean (\S+) ", sys.argv[1])
assert m, "unexpected output: " + sys.argv[1]
worst, mean = float(m.group(1)), float(m.group(2))
# documented: worst 0.0224, mean 0.0044 (+-0.004 with torch's summation order)
assert 0.015 <= worst <= 0.03, worst
assert 0.003 <= mean <= 0.006, mean
print("ok - int8_sim exact-weights: worst %.4f mean %.5f" % (worst, mean))
PY
