#!/usr/bin/env bash
# tools/make_demo_model.sh - builds the demo model (what `make` does for
# models/chexnet-demo.safetensors; tests/reference/test_demo_reproducible.sh
# builds it again the same way).
#
#   tools/make_demo_model.sh MAKE_DEMO_WEIGHTS CHEX OUT [CHEX CALIBRATE FLAGS...]
#   tools/make_demo_model.sh --inputs      the calibration radiographs
#
# MAKE_DEMO_WEIGHTS writes the fixed-seed weights, then CHEX calibrate adds
# their int8 calibration from the radiographs of tests/data (PROVENANCE.md).
# The same tools and images give the same bytes whatever the thread count
# (--threads, OMP_NUM_THREADS) on one fp32 path (metadata
# int8_calibration.fp32_path). OUT appears complete or not at all.
set -euo pipefail
IMAGES=(tests/data/00000001_000.png tests/data/00000002_000.png tests/data/00000047_005.png
        tests/data/00013911_000.png tests/data/h0001.png tests/data/16747_3_1.jpg)
if [ "${1:-}" = --inputs ]; then
  echo "${IMAGES[@]}"
  exit 0
fi
if [ $# -lt 3 ]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
tool=$1 chex=$2 out=$3
shift 3
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
trap 'rm -f "$out.raw" "$out.tmp"' EXIT
"$tool" "$out.raw"
"$chex" calibrate --model "$out.raw" --out "$out.tmp" "$@" "${IMAGES[@]/#/$root/}"
mv "$out.tmp" "$out"
