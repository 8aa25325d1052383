#!/usr/bin/env bash
# make bench: runs every benchmark driver tools/bench_*.sh in turn. Benchmarks
# print figures; they never pass or fail on speed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export BUILD=${BUILD:-build} BIN=${BIN:-bin} MODELS=${MODELS:-models} PY=${PY:-/usr/bin/python3}
for b in tools/bench_*.sh; do
  [ -e "$b" ] || continue
  echo "=== $(basename "$b" .sh)"
  bash "$b"
done
