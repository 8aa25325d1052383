#!/usr/bin/env bash
# Preprocessing vs torch: builds tests/reference/preprocess_driver.c against
# $BUILD/libchex_pre.a and runs test_preprocess.py (every PNG colour type and
# depth, real radiographs, JPEG; every preset; max |diff| <= 1e-4 normalised).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
CC=${CC:-gcc}
make -s BUILD="$BUILD" BIN="${BIN:-bin}" "$BUILD/libchex_pre.a"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$CC -O2 -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -fopenmp -I. -o "$work/preprocess_driver" \
  tests/reference/preprocess_driver.c "$BUILD/libchex_pre.a" -lpng16 -ljpeg -lturbojpeg -lopenjp2 -lcharls -ljansson -lz -lm
"$PY" tests/reference/test_preprocess.py "$work/preprocess_driver" "$work"
