#!/usr/bin/env bash
# Short fuzz pass for `make test`: builds every tests/fuzz/fuzz_*.c target with
# clang (libFuzzer + ASan + UBSan, see the Makefile) and runs each for
# $FUZZ_TEST_SECONDS (default 20) on its seed corpus, $FUZZ_JOBS (default 2)
# at a time; any finding fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD=${BUILD:-build}
bins=()
for src in tests/fuzz/fuzz_*.c; do
  [ -e "$src" ] || continue
  bins+=("$BUILD/fuzz/$(basename "$src" .c)")
done
[ ${#bins[@]} -gt 0 ] || { echo "no fuzz targets found"; exit 1; }
# one make for all: preprocessing/ is compiled once (see the Makefile)
make -s -j"${FUZZ_JOBS:-2}" BUILD="$BUILD" "${bins[@]}"
FUZZ_SECONDS=${FUZZ_TEST_SECONDS:-20} BUILD="$BUILD" bash tests/fuzz/run.sh "${bins[@]}"
