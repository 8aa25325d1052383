#!/usr/bin/env bash
# Short fuzz pass for `make test`: builds every tests/fuzz/fuzz_*.c target with
# clang (libFuzzer + ASan + UBSan, see the Makefile) and runs each for
# $FUZZ_TEST_SECONDS (default 20) on its seed corpus; any finding fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD=${BUILD:-build}
bins=()
for src in tests/fuzz/fuzz_*.c; do
  [ -e "$src" ] || continue
  name=$(basename "$src" .c)
  make -s BUILD="$BUILD" "$BUILD/fuzz/$name"
  bins+=("$BUILD/fuzz/$name")
done
[ ${#bins[@]} -gt 0 ] || { echo "no fuzz targets found"; exit 1; }
FUZZ_SECONDS=${FUZZ_TEST_SECONDS:-20} BUILD="$BUILD" bash tests/fuzz/run.sh "${bins[@]}"
