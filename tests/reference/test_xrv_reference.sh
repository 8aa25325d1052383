#!/usr/bin/env bash
# chexd answers torchxrayvision DenseNet-121 weights as torchxrayvision does:
# operating-point normalised probabilities (op_norm), untrained labels left
# out, and the xrv preset's tensor equal to torchxrayvision's normalize /
# XRayCenterCrop / XRayResizer (skimage resize, Debian python3-skimage 0.19),
# against tests/reference/xrvref.py (torchxrayvision's pipeline from its
# source) on torch-made xrv-layout checkpoints. See tests/reference/xrv_check.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
: "${BUILD:=build}" "${BIN:=bin}" "${PY:=/usr/bin/python3}" "${CC:=cc}"
work=$(mktemp -d "${TMPDIR:-/tmp}/chex-xrv.XXXXXX")
trap 'rm -rf "$work"' EXIT
$CC -O2 -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -fopenmp -I. -o "$work/preprocess_driver" \
  tests/reference/preprocess_driver.c "$BUILD/libchex_pre.a" -lpng16 -ljpeg -lturbojpeg -lopenjp2 -lcharls -ljansson -lz -lm
"$PY" tests/reference/xrv_check.py --chex "$BIN/chex" --chexd "$BIN/chexd" --pre-driver "$work/preprocess_driver" \
  --xrays ../shared/data/xrays --work "$work"
