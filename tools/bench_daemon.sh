#!/usr/bin/env bash
# make bench: throughput and latency of the live daemon on loopback, with one
# client and with 8 concurrent clients (dynamic batching should make the second
# faster). Figures only, never pass/fail. Request counts: BENCH_REQS_1 (single
# client, default 24) and BENCH_REQS_8 (per client of 8, default 6).
source "$(dirname "${BASH_SOURCE[0]}")/../tests/integration/lib.sh"
export PYTHONPATH=$ROOT/tests/integration
n1=${BENCH_REQS_1:-24}
n8=${BENCH_REQS_8:-6}

start_daemon bench --log-level warn
echo "chexd $("$CHEXD" --version | cut -d' ' -f2), model $(curl -s "$URL/v1/model" | "$PY" -c \
  'import json,sys; j=json.load(sys.stdin); print(j["name"], "preset", j["preprocess"], "threads", j["threads"], "max_batch", j["max_batch"])')"
# Warm-up (page in weights, first OpenMP team).
"$PY" "$ROOT/tests/integration/loadgen.py" bench "$PORT" 1 2 >/dev/null
one=$("$PY" "$ROOT/tests/integration/loadgen.py" bench "$PORT" 1 "$n1")
eight=$("$PY" "$ROOT/tests/integration/loadgen.py" bench "$PORT" 8 "$n8")
"$PY" - "$one" "$eight" <<'PY'
import json, sys
rows = [json.loads(a) for a in sys.argv[1:]]
print("%-8s %9s %7s %12s %9s %9s" % ("clients", "requests", "errors", "images/s", "p50 ms", "p99 ms"))
for r in rows:
    print("%-8d %9d %7d %12.2f %9.1f %9.1f" % (r["clients"], r["requests"], r["errors"],
                                               r["images_per_s"], r["p50_ms"], r["p99_ms"]))
print("8-client / 1-client throughput: %.2fx" % (rows[1]["images_per_s"] / rows[0]["images_per_s"]))
PY
curl -s "$URL/metrics" | grep -E '^chexd_batch_size_(sum|count) ' | tr '\n' ' '; echo
stop_daemon "$PID" >/dev/null 2>&1 || true
