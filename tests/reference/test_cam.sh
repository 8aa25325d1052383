#!/usr/bin/env bash
# Class activation maps vs torch: builds tests/reference/cam_driver.c against
# the $BUILD libraries and runs test_cam.py (raw 7x7 maps, bilinear 224x224
# upsampling and the map placed back on the original image, max |diff| <= 1e-4,
# on real radiographs with every preprocessing preset).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD=${BUILD:-build}
MODELS=${MODELS:-models}
PY=${PY:-/usr/bin/python3}
CC=${CC:-gcc}
make -s BUILD="$BUILD" BIN="${BIN:-bin}" MODELS="$MODELS" "$BUILD/libchex_model.a" \
  "$BUILD/libchex_pre.a" "$MODELS/chexnet-demo.safetensors"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$CC -O2 -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -fopenmp -I. -o "$work/cam_driver" \
  tests/reference/cam_driver.c "$BUILD/libchex_model.a" "$BUILD/libchex_pre.a" \
  -lpng16 -ljpeg -lturbojpeg -lopenjp2 -lcharls -ljansson -lz -lm
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$PY" tests/reference/test_cam.py "$work/cam_driver" \
  "$MODELS/chexnet-demo.safetensors" "$work"
