#!/usr/bin/env bash
# make bench: throughput and latency of the live daemon on loopback, with one
# client and with 8 concurrent clients (dynamic batching and overlapping
# decode with inference should make the second faster), first with the
# default config, then 8 clients again with batch_window_ms 50 (fuller
# batches for more latency). Figures only, never pass/fail. Request counts:
# BENCH_REQS_1 (single client, default 24), BENCH_REQS_8 (per client of 8,
# default 6).
source "$(dirname "${BASH_SOURCE[0]}")/../tests/integration/lib.sh"
export PYTHONPATH=$ROOT/tests/integration
n1=${BENCH_REQS_1:-24}
n8=${BENCH_REQS_8:-6}
LG=$ROOT/tests/integration/loadgen.py

batch_stats() { # prints "sum count" of chexd_batch_size
  curl -s "$URL/metrics" | awk '/^chexd_batch_size_sum /{s=$2} /^chexd_batch_size_count /{c=$2} END{print s, c}'
}
run() { # LABEL CLIENTS REQS: one JSON row with the mean batch size of this run
  local before after out
  before=$(batch_stats)
  out=$("$PY" "$LG" bench "$PORT" "$2" "$3")
  after=$(batch_stats)
  echo "$out" | "$PY" -c '
import json, sys
j = json.load(sys.stdin)
b0s, b0c, b1s, b1c = map(float, sys.argv[2:6])
j["label"] = sys.argv[1]
j["mean_batch"] = round((b1s - b0s) / max(1.0, b1c - b0c), 2)
print(json.dumps(j))' "$1" $before $after
}

start_daemon bench --log-level warn
echo "chexd $("$CHEXD" --version | cut -d' ' -f2), model $(curl -s "$URL/v1/model" | "$PY" -c \
  'import json,sys; j=json.load(sys.stdin); print(j["name"], "preset", j["preprocess"], "isa", j["isa"], "threads", j["threads"], "max_batch", j["max_batch"])')"
"$PY" "$LG" bench "$PORT" 1 2 >/dev/null # warm-up: weights paged in, OpenMP team up
rows=("$(run "default config" 1 "$n1")" "$(run "default config" 8 "$n8")")
stop_daemon "$PID" >/dev/null 2>&1 || true
start_daemon bench-window --log-level warn --batch-window-ms 50
"$PY" "$LG" bench "$PORT" 1 2 >/dev/null
rows+=("$(run "batch_window_ms 50" 8 "$n8")")
stop_daemon "$PID" >/dev/null 2>&1 || true

"$PY" - "${rows[@]}" <<'PY'
import json, sys
rows = [json.loads(a) for a in sys.argv[1:]]
print("%-20s %7s %8s %6s %9s %10s %8s %8s" % ("", "clients", "requests", "errors", "images/s",
                                              "mean batch", "p50 ms", "p99 ms"))
for r in rows:
    print("%-20s %7d %8d %6d %9.2f %10.2f %8.1f %8.1f" % (
        r["label"], r["clients"], r["requests"], r["errors"], r["images_per_s"], r["mean_batch"],
        r["p50_ms"], r["p99_ms"]))
print("8-client / 1-client throughput: %.2fx (default config), %.2fx (batch_window_ms 50)" % (
    rows[1]["images_per_s"] / rows[0]["images_per_s"], rows[2]["images_per_s"] / rows[0]["images_per_s"]))
PY
