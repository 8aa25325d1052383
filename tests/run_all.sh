#!/usr/bin/env bash
# Runs every test suite and prints one closing line "N passed, N failed".
#   tests/run_all.sh [CATEGORY...]   categories: unit reference integration fuzz deploy ...
#                                    (folders under tests/); default all.
# Unit tests are the cmocka binaries in $BUILD/tests; every other suite is a
# script tests/CATEGORY/test_*.sh that exits non-zero on failure.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export BUILD=${BUILD:-build} BIN=${BIN:-bin} MODELS=${MODELS:-models} PY=${PY:-/usr/bin/python3}
export FUZZ_CC=${FUZZ_CC:-clang}
want=("$@")
wanted() {
  [ ${#want[@]} -eq 0 ] && return 0
  local w; for w in "${want[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1
}
passed=0; failed=0; failures=(); times=()
run_one() { # name, command...
  local name=$1; shift
  local t0=$SECONDS
  echo "=== $name"
  if "$@"; then
    passed=$((passed + 1)); echo "--- ok   $name ($((SECONDS - t0)) s)"
  else
    failed=$((failed + 1)); failures+=("$name"); echo "--- FAIL $name ($((SECONDS - t0)) s)"
  fi
  times+=("$((SECONDS - t0)) $name")
}
if wanted unit; then
  for t in tests/unit/test_*.c; do
    [ -e "$t" ] || continue
    b="$BUILD/tests/$(basename "$t" .c)"
    run_one "unit/$(basename "$t" .c)" "$b"
  done
fi
for dir in tests/*/; do
  cat=$(basename "$dir")
  [ "$cat" = unit ] && continue
  wanted "$cat" || continue
  for s in "$dir"test_*.sh; do
    [ -e "$s" ] || continue
    run_one "$cat/$(basename "$s" .sh)" bash "$s"
  done
done
echo
echo "slowest suites (s):"
printf '%s\n' "${times[@]}" | sort -rn | head -10 | sed 's/^/  /'
echo "total: $SECONDS s"
if [ $failed -gt 0 ]; then
  echo "failed suites: ${failures[*]}"
fi
echo "tests: $passed passed, $failed failed"
[ $failed -eq 0 ]
