#!/usr/bin/env bash
# The whole DenseNet-121 in C against torchvision's densenet121 on the same
# safetensors weights (the demo model): real radiographs and random inputs,
# batch 1 and 4, 1 and 2 OpenMP threads, every ISA path this CPU supports, with
# per-stage differences; plus the naive reference path once.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
: "${BUILD:=build}" "${MODELS:=models}" "${PY:=/usr/bin/python3}"
work=$(mktemp -d "${TMPDIR:-/tmp}/chex-ref.XXXXXX")
trap 'rm -rf "$work"' EXIT
source tests/reference/build_driver.sh
build_ref_driver "$work/ref_driver"
"$PY" tests/reference/compare_torch.py --driver "$work/ref_driver" \
  --model "$MODELS/chexnet-demo.safetensors" --xrays ../shared/data/xrays --work "$work"
