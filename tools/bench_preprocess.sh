#!/usr/bin/env bash
# Preprocessing benchmark (run by `make bench`): decode + preprocess time of a
# 2048x2500 16-bit grayscale PNG (12-bit detector values, as a PACS exports
# them; generated from a test radiograph), plus the 1024x1024 8-bit PNG and the
# colour JPEG from tests/data. Prints best and mean ms over repeated runs of
# tests/reference/preprocess_driver.c, built against $BUILD/libchex_pre.a.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
CC=${CC:-gcc}
REPEAT=${BENCH_REPEAT:-10}
make -s BUILD="$BUILD" BIN="${BIN:-bin}" "$BUILD/libchex_pre.a"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$CC -O2 -std=c11 -D_GNU_SOURCE -fopenmp -I. -o "$work/driver" tests/reference/preprocess_driver.c \
  "$BUILD/libchex_pre.a" -lpng16 -ljpeg -lturbojpeg -lopenjp2 -lcharls -ljansson -lz -lm
"$PY" - "$work/xray16.png" <<'PYEOF'
import sys, os
sys.path.insert(0, "tests/reference")
import numpy as np
from PIL import Image
from test_preprocess import write_png
im = Image.open("tests/data/00000002_000.png").convert("L").resize((2048, 2500), Image.BILINEAR)
a = np.asarray(im).astype(np.int64) * 12 + 1014
a = a + np.random.default_rng(0).integers(0, 8, a.shape)  # detector noise
write_png(sys.argv[1], a[..., None], 0, 16, sbit=[12])
PYEOF
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
run() { # label, image, preset, channels, extra args
  local label=$1 img=$2 preset=$3 ch=$4; shift 4
  local t
  t=$("$work/driver" --repeat "$REPEAT" "$@" "$preset" "$ch" 224 "$img" "$work/out.f32" | grep '^ms')
  printf '%-44s %-18s %sch  %s\n' "$label" "$preset" "$ch" "$t"
}
run "2048x2500 16-bit gray PNG, minmax" "$work/xray16.png" resize256-crop224 3
run "2048x2500 16-bit gray PNG, sbit" "$work/xray16.png" resize256-crop224 3 --png16 sbit
run "2048x2500 16-bit gray PNG" "$work/xray16.png" tencrop 3
run "2048x2500 16-bit gray PNG" "$work/xray16.png" xrv 1 --mean 0.5 --std 0.00048828125
run "1024x1024 8-bit gray PNG" tests/data/00000002_000.png resize256-crop224 3
run "1036x885 RGB JPEG" tests/data/16747_3_1.jpg resize256-crop224 3
echo "(the 16-bit PNG is $(($(stat -c %s "$work/xray16.png") / 1024)) KiB; decode = libpng inflate + unfilter + float conversion)"
