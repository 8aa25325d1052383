#!/usr/bin/env bash
# make bench, real-size section: a 3000x2500 12-bit DX DICOM (15 MB) and the
# same pixels as a 16-bit PNG (and the DICOM base64 in an Open Inference
# Protocol JSON body, /v2/.../infer), made from a shared radiograph by
# tools/make_realsize.py, served by chexd with memory_limit_mb 300. Prints, in
# one run: daemon requests/s with 8 keep-alive connections (wrk, a C client,
# so no Python competes for the cores) for each image next to the network's
# own images/s (`chex bench --batch 8`); one request on an idle daemon (curl,
# median of BENCH_IDLE_REQS, default 15) next to the batch-1 forward; the
# daemon's peak RSS. Figures only, never pass/fail. BENCH_WRK_SECONDS (default
# 15) sets each wrk run's length.
source "$(dirname "${BASH_SOURCE[0]}")/../tests/integration/lib.sh"
secs=${BENCH_WRK_SECONDS:-15}
nidle=${BENCH_IDLE_REQS:-15}
SRC=$ROOT/../shared/data/xrays/00000001_000.png
[ -f "$SRC" ] || SRC=$DATA/00000001_000.png
command -v wrk >/dev/null || fail "wrk is not installed (deploy/packages/test.txt)"
"$PY" "$ROOT/tools/make_realsize.py" "$SRC" "$TMPD/dx.dcm" "$TMPD/dx.png"

# The network alone, same threads as the daemon.
b8=$("$CHEX" bench --model "$DEMO" --batch 8 --runs 10)
b1=$("$CHEX" bench --model "$DEMO" --batch 1 --runs 30)
net_ips=$(echo "$b8" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["images_per_s"])')
net_b1=$(echo "$b1" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["median_ms"])')

start_daemon realsize --memory-limit-mb 300 --log-level warn

lua() { # FILE CTYPE -> a wrk script posting FILE
  cat >"$TMPD/$(basename "$1").lua" <<LUA
local f = assert(io.open("$1", "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "$2"
LUA
  echo "$TMPD/$(basename "$1").lua"
}
load() { # FILE CTYPE [PATH [CONNECTIONS]] -> "requests/s non2xx"
  local out
  out=$(wrk -t 1 -c "${4:-8}" -d "${secs}s" --timeout 30s -s "$(lua "$1" "$2")" "$URL${3:-/v1/predict}")
  echo "$out" | awk '/^Requests\/sec:/ {r=$2} /Non-2xx/ {n=$NF} /Socket errors/ {e=$0} END {printf "%s %d\n", r, n}'
}
idle() { # FILE CTYPE -> median ms of single requests on the idle daemon
  local i
  for i in $(seq 1 "$nidle"); do
    curl -s -o /dev/null -w '%{time_total}\n' -H "Content-Type: $2" --data-binary @"$1" \
      "$URL/v1/predict"
  done | sort -n | awk '{v[NR]=$1} END {printf "%.1f\n", v[int((NR+1)/2)] * 1000}'
}

for f in dx.dcm:application/dicom dx.png:image/png; do # warm-up
  curl -s -o /dev/null -H "Content-Type: ${f#*:}" --data-binary @"$TMPD/${f%%:*}" "$URL/v1/predict"
done
idle_dcm=$(idle "$TMPD/dx.dcm" application/dicom)
idle_png=$(idle "$TMPD/dx.png" image/png)
# The same curl upload to a sink that only reads the body (the part of the idle
# figure no server can avoid); no Expect: 100-continue, which the sink ignores.
SINK_PORT=$(free_port)
"$PY" - "$SINK_PORT" >/dev/null 2>&1 <<'PY' &
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(4)
buf = bytearray(1 << 20)
while True:
    c, _ = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        data += c.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    n = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0]
    got = len(rest)
    while got < n:
        got += c.recv_into(buf)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    c.close()
PY
SINK_PID=$!
until curl -s -o /dev/null -H "Expect:" --data-binary x "http://127.0.0.1:$SINK_PORT/"; do sleep 0.1; done
upload_dcm=$(for i in $(seq 1 "$nidle"); do
  curl -s -o /dev/null -w '%{time_total}\n' -H "Expect:" --data-binary @"$TMPD/dx.dcm" "http://127.0.0.1:$SINK_PORT/"
done | sort -n | awk '{v[NR]=$1} END {printf "%.1f\n", v[int((NR+1)/2)] * 1000}')
kill "$SINK_PID" 2>/dev/null || true
# one idle request's own timings (before the loads: wrk leaves requests queued)
decode=$(curl -s -H "Content-Type: application/dicom" --data-binary @"$TMPD/dx.dcm" "$URL/v1/predict" |
  "$PY" -c 'import json,sys; t=json.load(sys.stdin)["timing_ms"]; print(" ".join("%s=%.1f" % kv for kv in sorted(t.items())))' 2>/dev/null || echo "?")
read -r rps_dcm bad_dcm < <(load "$TMPD/dx.dcm" application/dicom)
read -r rps_png bad_png < <(load "$TMPD/dx.png" image/png)
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$PID/status")
mem=$(curl -s "$URL/metrics" | awk '/^chexd_memory_reserved_peak_bytes / {p=$2} /^chexd_memory_refusals_total / {r=$2} END {printf "%.0f %d", p / 1048576, r}')
# The DICOM as base64 in a /v2 JSON body: 4 connections (each holds its
# 20 MB body and 15 MB of decoded scratch: 8 would not fit memory_limit_mb 300
# and be refused with 503 by design).
model=$(curl -s "$URL/v1/model" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["name"])')
"$PY" - "$TMPD/dx.dcm" "$TMPD/dx.json" <<'PY'
import base64, json, sys
b = open(sys.argv[1], "rb").read()
json.dump({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                       "parameters": {"content_type": "base64"},
                       "data": [base64.b64encode(b).decode()]}]}, open(sys.argv[2], "w"))
PY
read -r rps_oip bad_oip < <(load "$TMPD/dx.json" application/json "/v2/models/$model/infer" 4)
stop_daemon "$PID" >/dev/null 2>&1 || true

"$PY" - "$net_ips" "$net_b1" "$rps_dcm" "$bad_dcm" "$rps_png" "$bad_png" "$idle_dcm" "$idle_png" \
  "$hwm" $mem "$decode" "$(stat -c %s "$TMPD/dx.dcm")" "$(stat -c %s "$TMPD/dx.png")" "$upload_dcm" \
  "$rps_oip" "$bad_oip" <<'PY'
import sys
a = sys.argv[1:]
net, b1 = float(a[0]), float(a[1])
rd, bd, rp, bp = float(a[2]), int(a[3]), float(a[4]), int(a[5])
idd, idp, hwm = float(a[6]), float(a[7]), int(a[8]) / 1024
peak_res, refusals, timing = a[9], a[10], a[11]
print("real-size images: DICOM 3000x2500 12-bit %.1f MB, 16-bit PNG %.1f MB; memory_limit_mb 300" % (
    int(a[12]) / 1e6, int(a[13]) / 1e6))
print("%-34s %10s %10s %8s" % ("", "measured", "reference", "ratio"))
print("%-34s %10.2f %10.2f %7.2fx  (target >= 0.7x; non-2xx %d)" % (
    "DICOM, 8 conns, req/s vs b8 img/s", rd, net, rd / net, bd))
print("%-34s %10.2f %10.2f %7.2fx  (target >= 0.4x; non-2xx %d)" % (
    "16-bit PNG, 8 conns, req/s", rp, net, rp / net, bp))
print("%-34s %10.2f %10.2f %7.2fx  (non-2xx %d)" % (
    "DICOM base64 /v2 JSON, 4 conns", float(a[15]), net, float(a[15]) / net, int(a[16])))
print("%-34s %10.1f %10.1f %7.2fx  (target <= 1.5x)" % ("idle DICOM ms vs b1 forward ms", idd, b1, idd / b1))
print("%-34s %10.1f %10.1f %7.2fx" % ("idle 16-bit PNG ms", idp, b1, idp / b1))
print("%-34s %10.1f %10.1f %7.2fx  (curl to a sink that only reads)" % ("DICOM upload alone ms", float(a[14]), b1, float(a[14]) / b1))
print("%-34s %10.0f %10d %7.2fx  (target <= 1.0x)" % ("peak RSS MiB (VmHWM) vs limit", hwm, 300, hwm / 300))
print("(peak RSS and budget: under the DICOM and PNG loads)")
print("budget: peak reserved %s MiB, refusals %s; one idle DICOM's timing_ms: %s" % (peak_res, refusals, timing))
PY
