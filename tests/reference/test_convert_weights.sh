#!/usr/bin/env bash
# tools/convert_weights.py on torch-made checkpoints with random weights in the
# real key layouts (CheXNet reimplementation model.pth.tar, torchxrayvision,
# plain torchvision state_dict in F16, jrzech-style pickled whole model in BF16):
# the converted file run by the C network gives torch's probabilities.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
: "${BUILD:=build}" "${PY:=/usr/bin/python3}"
work=$(mktemp -d "${TMPDIR:-/tmp}/chex-conv.XXXXXX")
trap 'rm -rf "$work"' EXIT
source tests/reference/build_driver.sh
build_ref_driver "$work/ref_driver"
"$PY" tests/reference/convert_check.py --driver "$work/ref_driver" \
  --xrays ../shared/data/xrays --work "$work"
