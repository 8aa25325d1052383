#!/usr/bin/env bash
# Bounded soak on loopback: 2,000 requests from 8 concurrent clients, zero
# failures, and RSS stops growing. Every 10th request is a classification (the
# demo network costs 0.1-1 s per image on 2 cores); the others walk the other
# routes and the error paths that allocate (decode errors, multipart, 422).
# CHEX_SOAK_REQUESTS / CHEX_SOAK_PREDICT_EVERY change the mix.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PYTHONPATH=$ROOT/tests/integration
# Under ASan (make asan sets CHEX_ASAN=1) the network is several times slower
# and freed memory sits in ASan's quarantine: fewer classifications, and the
# RSS bound gives way to LeakSanitizer's check at exit (a leak fails stop_daemon).
total=${CHEX_SOAK_REQUESTS:-2000}
if [ "${CHEX_ASAN:-0}" = 1 ]; then every=${CHEX_SOAK_PREDICT_EVERY:-50}; else every=${CHEX_SOAK_PREDICT_EVERY:-10}; fi

start_daemon soak --queue-depth 64 --log-level warn
out=$("$PY" "$ROOT/tests/integration/loadgen.py" soak "$PORT" "$PID" "$total" 8 "$every")
echo "$out"
"$PY" - "$out" "$total" "${CHEX_ASAN:-0}" <<'PY' || fail "soak: $out"
import json, sys
j = json.loads(sys.argv[1])
assert j["requests"] == int(sys.argv[2]) and j["failed"] == 0, j
if sys.argv[3] == "1":
    sys.exit(0)
rss = j["rss_kb"]
# Growth over the second half must be small next to the first half's warm-up:
# allocator caches fill early, a leak keeps climbing.
half = rss[len(rss) // 2:]
assert max(half) - half[0] < 24 * 1024, rss
assert max(rss) < 1024 * 1024, rss
PY
ok "soak: $total requests, 8 clients, zero failures, RSS flat in the second half"
curl -s "$URL/metrics" | grep -E '^chexd_(images_classified_total|in_flight_requests|queue_depth) '
stop_daemon "$PID" || fail "exit status"
