#!/usr/bin/env bash
# tests/fuzz/run.sh FUZZ_BINARY...  (used by `make fuzz` and tests/fuzz/test_fuzz.sh)
# Runs each libFuzzer binary for $FUZZ_SECONDS (default 60) on a temporary copy
# of its seed corpus tests/fuzz/corpus/<name>/ (the committed seeds are never
# modified), $FUZZ_JOBS targets at a time (default 2: every target still gets
# its full seconds, on its own core). Fails if any target reports a crash, leak,
# timeout or OOM; the reproducer is kept in $BUILD/fuzz/artifacts/<name>/.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD=${BUILD:-build}
secs=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-2}
[ $# -gt 0 ] || { echo "usage: $0 FUZZ_BINARY..." >&2; exit 2; }

# one target: prints its report to stdout, exit 1 on a finding
run_target() {
  local bin=$1 name work seeds rc runs cov
  name=$(basename "$bin")
  if [ ! -x "$bin" ]; then
    echo "FAIL $name: $bin is not built"; return 1
  fi
  work=$(mktemp -d)
  mkdir -p "$work/corpus" "$work/artifacts"
  if [ -d "tests/fuzz/corpus/$name" ]; then
    cp -r "tests/fuzz/corpus/$name/." "$work/corpus/"
  fi
  seeds=$(find "$work/corpus" -type f | wc -l)
  # -timeout: one input taking >10 s is a finding; -rss_limit_mb bounds memory
  "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/log" 2>&1
  rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/log" | grep -o '[0-9]*$' || true)
  cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -1 || true)
  if [ $rc -eq 0 ] && ! ls "$work/artifacts" | grep -q .; then
    echo "ok   $name: ${secs}s, ${runs:-?} runs, $cov, $seeds seeds, no findings"
    rm -rf "$work"
    return 0
  fi
  echo "FAIL $name (exit $rc):"
  grep -E 'ERROR|SUMMARY|==[0-9]+==|Test unit written|runtime error' "$work/log" | head -20
  tail -40 "$work/log"
  mkdir -p "$BUILD/fuzz/artifacts/$name"
  cp -r "$work/artifacts/." "$BUILD/fuzz/artifacts/$name/" 2>/dev/null || true
  echo "reproducers in $BUILD/fuzz/artifacts/$name/"
  rm -rf "$work"
  return 1
}

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
pids=()
i=0
for bin in "$@"; do
  # keep at most $jobs targets running
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  run_target "$bin" >"$out/$i.txt" 2>&1 &
  pids[i]=$!
  i=$((i + 1))
done
status=0
for ((k = 0; k < i; k++)); do
  wait "${pids[k]}" || status=1
  cat "$out/$k.txt"
done
exit $status
