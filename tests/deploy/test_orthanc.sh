#!/usr/bin/env bash
# tests/deploy/test_orthanc.sh - end to end against a real PACS: Debian's Orthanc 1.10
# with deploy/orthanc/chexd_plugin.py and the shipped deploy/orthanc/orthanc.json
# (ports, storage and chexd URL overridden), bin/chexd with the demo model and a
# bearer token, dcmtk's storescu as the modality.
#
# Orthanc 1.10 cannot bind to loopback only (its DICOM port listens on every
# interface), so everything runs inside a private network namespace (unshare -n, lo
# up): nothing is reachable from outside. Processes are started and stopped by PID.
#
# Checks: a DX made from a real radiograph, C-STOREd, gets its chexd answer stored as
# metadata + attachment, equal to `bin/chex classify` on the same file (same labels,
# |diff| <= 1e-6) and free of patient identity; an OT instance is left alone; while the
# worker waits on a frozen chexd (SIGSTOP), Orthanc's REST API and C-STORE answer; chexd
# stopped while an instance arrives -> "retrying" recorded, chexd restarted -> the
# result lands; JPEG-LS, JPEG 2000 and JPEG Lossless instances are sent as stored (no
# transcoding: chexd's answer names their syntax) and classified like chex classify; an
# image chexd refuses (422) is recorded as failed; chexd stopped for good
# -> "failed after N attempts over ..." once its retry horizon (30 s here) is over; a
# study reclassified through the plugin's route; with an in-memory window of 1 id,
# three instances waiting on a frozen chexd all stay pending in the plugin's store
# (none refused, memory holds at most 2 ids) and are all classified; every result
# survives an Orthanc restart. TLS, tokens, long outages, 300 CT instances and
# restarts with a backlog: tests/deploy/test_orthanc_tls.sh.
#   env: BIN, MODELS, PY (as given by tests/run_all.sh)
set -euo pipefail
self=$(readlink -f "${BASH_SOURCE[0]}")
. "$(dirname "$self")/lib_orthanc.sh"
orthanc_test_setup test_orthanc "$self" "${1:-}" storescu dcmcjpls

CHEXD_PORT=8080 HTTP_PORT=8042 DICOM_PORT=4242
USER_PW="chexd-test:$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tmp/token"
CHEXD_ARGS=(--api-token-file "$tmp/token")

store() { # FILE [storescu options] -> Orthanc instance id (C-STORE, then lookup by SOP UID)
  timeout 30 storescu "${@:2}" -aet CHEXTEST -aec ORTHANC 127.0.0.1 "$DICOM_PORT" "$1" >>"$tmp/storescu.log" 2>&1 ||
    fail "storescu $1 failed or hung: $(tail -n 3 "$tmp/storescu.log")"
  lookup "$1"
}
lookup() { # FILE -> Orthanc instance id of its SOP instance UID
  local uid; uid=$("$PY" -c 'import sys, pydicom; print(pydicom.dcmread(sys.argv[1]).SOPInstanceUID)' "$1")
  orth POST /tools/lookup --data-binary "$uid" |
    "$PY" -c 'import json, sys; r = [x["ID"] for x in json.load(sys.stdin) if x["Type"] == "Instance"]; print(r[0])'
}
status_of() { orth GET "/instances/$1/metadata/chexd-status" 2>/dev/null || true; }
wait_status() { # ID PREFIX TIMEOUT_S -> waits until chexd-status starts with PREFIX
  local s
  for _ in $(seq 1 $(($3 * 4))); do
    s=$(status_of "$1")
    case $s in "$2"*) return 0 ;; esac
    sleep 0.25
  done
  fail "instance $1: chexd-status is '$s' after $3 s, expected '$2...'"
}
worker_took() { # N PENDING: the plugin's worker holds one instance, has received at least N, and PENDING are pending (- for any)
  orth GET /chexd/status | "$PY" -c 'import json,sys; s = json.load(sys.stdin); sys.exit(0 if s["in_flight"] == 1 and s["counters"]["received"] >= int(sys.argv[1]) and sys.argv[2] in ("-", str(s["pending"])) else 1)' "$1" "$2"
}
chexd_has_request() { # a connection to (frozen) chexd holds request bytes chexd has not read
  "$PY" - "$CHEXD_PORT" <<'PY'
import sys
port = int(sys.argv[1])
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        with open(table) as f:
            rows = f.read().splitlines()[1:]
    except OSError:
        continue
    for row in rows:
        c = row.split()  # local, remote, state (01 established), tx_queue:rx_queue
        if int(c[1].rsplit(":", 1)[1], 16) == port and c[3] == "01" and int(c[4].split(":")[1], 16) > 0:
            sys.exit(0)
sys.exit(1)
PY
}
# The stored answer must equal chex classify on the same DICOM file.
check_stored() { # ID FILE
  orth GET "/instances/$1/metadata/chexd" >"$tmp/meta.json"
  orth GET "/instances/$1/attachments/chexd/data" >"$tmp/attach.json"
  "$BIN/chex" classify --model "$MODEL" "$2" >"$tmp/cli.json" || fail "chex classify $2"
  "$PY" - "$tmp/meta.json" "$tmp/attach.json" "$tmp/cli.json" "$2" <<'EOF'
import json, sys
import pydicom
meta_raw = open(sys.argv[1]).read()
meta, attach = json.loads(meta_raw), json.load(open(sys.argv[2]))
cli = json.loads(open(sys.argv[3]).read().splitlines()[0])
ds = pydicom.dcmread(sys.argv[4])
assert meta == attach, "metadata and attachment differ"
a = {p["label"]: p["probability"] for p in meta["predictions"]}
b = {p["label"]: p["probability"] for p in cli["predictions"]}
assert len(a) == 14 and a.keys() == b.keys(), (sorted(a), sorted(b))
worst = max(abs(a[k] - b[k]) for k in a)
assert worst <= 1e-6, f"stored answer differs from chex classify by {worst}"
d = meta["dicom"]
assert d["sop_instance_uid"] == ds.SOPInstanceUID, d
assert d["study_instance_uid"] == ds.StudyInstanceUID, d
assert d["modality"] == ds.Modality, d
for tag in ("PatientName", "PatientID", "PatientBirthDate"):
    v = str(ds.get(tag, ""))
    assert v and v not in meta_raw, f"{tag} {v!r} leaked into the stored answer"
print(f"  {sys.argv[4].rsplit('/', 1)[-1]}: stored answer = chex classify (14 labels, max diff {worst:.1e}), "
      f"no patient identity")
EOF
}

# ---- configuration: the shipped orthanc.json with test-only overrides ------------------
mkdir -p "$tmp/db"
"$PY" - "$ROOT/deploy/orthanc/orthanc.json" "$tmp" "$USER_PW" "$ROOT/deploy/orthanc/chexd_plugin.py" \
  "$HTTP_PORT" "$DICOM_PORT" "$CHEXD_PORT" >"$tmp/orthanc.json" <<'EOF'
import json, sys
cfg = json.load(open(sys.argv[1]))
tmp, user_pw, plugin, http, dicom, chexd = sys.argv[2:8]
user, pw = user_pw.split(":", 1)
cfg.update({
    "Name": "CHEXD-TEST", "StorageDirectory": tmp + "/db", "IndexDirectory": tmp + "/db",
    "HttpPort": int(http), "DicomPort": int(dicom), "RemoteAccessAllowed": False,
    "AuthenticationEnabled": True, "RegisteredUsers": {user: pw}, "PythonScript": plugin,
})
cfg["Chexd"].update({"Url": f"http://127.0.0.1:{chexd}/v1/predict", "TokenFile": tmp + "/token",
                     "BackoffSeconds": 0.5, "MaxBackoffSeconds": 2, "RetryHorizonHours": 30 / 3600})
json.dump(cfg, sys.stdout, indent=2)
EOF

# ---- images: DX from real radiographs, one study --------------------------------------
study=$("$PY" -c 'from pydicom.uid import generate_uid; print(generate_uid())')
series=$("$PY" -c 'from pydicom.uid import generate_uid; print(generate_uid())')
mk() { "$PY" tests/deploy/make_dx.py "$@" --study "$study"; }
mk tests/data/00000001_000.png "$tmp/dx1.dcm" --series "$series" --number 1
mk tests/data/00000002_000.png "$tmp/dx2.dcm" --series "$series" --number 2
mk tests/data/00000047_005.png "$tmp/ot.dcm" --number 3 --modality OT
mk tests/data/00013911_000.png "$tmp/dx4.dcm" --series "$series" --number 4
dcmcjpls "$tmp/dx4.dcm" "$tmp/dx4-jpegls.dcm"
"$PY" -c 'from PIL import Image; Image.open("tests/data/h0001.png").convert("L").resize((48, 48)).save("'"$tmp"'/small.png")'
mk "$tmp/small.png" "$tmp/small.dcm" --series "$series" --number 5
mk tests/data/00000047_005.png "$tmp/dx6.dcm" --series "$series" --number 6
mk tests/data/00000002_000.png "$tmp/dx7.dcm" --series "$series" --number 7
mk tests/data/00000001_000.png "$tmp/dx8.dcm" --series "$series" --number 8

# ---- start ----------------------------------------------------------------------------
start_chexd
start_orthanc "$tmp/orthanc.json"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/system")" = 401 ] ||
  fail "Orthanc answers without credentials"
orth GET /chexd/status | grep -q '"queue_size": 256' || fail "plugin route /chexd/status missing"
echo "orthanc: Orthanc $(orth GET /system | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["Version"])') with the chexd plugin, chexd with a bearer token"

# ---- 1. a DX arrives: result stored, equal to chex classify -----------------------------
t0=$(date +%s%N)
ot=$(store "$tmp/ot.dcm")
dx1=$(store "$tmp/dx1.dcm")
wait_status "$dx1" ok 60
echo "orthanc: DX C-STORE -> result stored in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
check_stored "$dx1" "$tmp/dx1.dcm"
# FIFO: the OT instance was taken before dx1 and must have been left alone.
[ "$(orth_code GET "/instances/$ot/metadata/chexd-status")" = 404 ] || fail "OT instance got a chexd status"
[ "$(orth_code GET "/instances/$ot/metadata/chexd")" = 404 ] || fail "OT instance was classified"
echo "orthanc: OT instance left alone"

# ---- 1b. the worker blocked on chexd never blocks the PACS ---------------------------------
# chexd frozen (SIGSTOP): the kernel still accepts the plugin's connection, so the worker
# waits inside its POST. Meanwhile Orthanc's REST API and C-STORE must keep answering.
kill -STOP "$chexd_pid"
dx7=$(store "$tmp/dx7.dcm")
wait_until 60 "the worker taking dx7" worker_took 3 1
# The worker is inside urlopen(), waiting on the frozen chexd: its request sits unread there.
wait_until 60 "the worker's request reaching the frozen chexd" chexd_has_request
worst=0
for path in /system /instances /chexd/status "/instances/$dx7/series" /statistics; do
  ms=$(curl -s -o /dev/null --max-time 5 -w '%{http_code} %{time_total}' -u "$USER_PW" "http://127.0.0.1:$HTTP_PORT$path")
  [ "${ms%% *}" = 200 ] || fail "REST $path answered '$ms' while the worker waits on chexd"
  worst=$("$PY" -c "print(max($worst, ${ms#* } * 1000))")
done
timeout 10 storescu -aet CHEXTEST -aec ORTHANC 127.0.0.1 "$DICOM_PORT" "$tmp/dx8.dcm" >>"$tmp/storescu.log" 2>&1 ||
  fail "C-STORE failed or blocked while the worker waits on chexd"
dx8=$(lookup "$tmp/dx8.dcm")
[ -z "$(status_of "$dx7")" ] || fail "dx7 has a status while chexd is frozen: $(status_of "$dx7")"
echo "orthanc: worker waiting on a frozen chexd: 5 REST calls answered (slowest $(printf '%.1f' "$worst") ms), C-STORE accepted"
kill -CONT "$chexd_pid"
wait_status "$dx7" ok 60
wait_status "$dx8" ok 60
check_stored "$dx7" "$tmp/dx7.dcm"

# ---- 2. chexd down while an instance arrives, then back: the result lands ---------------
stop_chexd
dx2=$(store "$tmp/dx2.dcm")
wait_status "$dx2" retrying 30
echo "orthanc: chexd down -> dx2 status '$(status_of "$dx2")'"
start_chexd
wait_status "$dx2" ok 30
check_stored "$dx2" "$tmp/dx2.dcm"

# ---- 3. compressed instances chexd reads itself: sent as stored, no transcoding --------
# (chexd's answer names the transfer syntax it decoded: the stored one, not 1.2.1)
sent_as_stored() { # ID SYNTAX
  [ "$(orth GET "/instances/$1/metadata/TransferSyntax")" = "$2" ] ||
    fail "Orthanc did not keep transfer syntax $2"
  orth GET "/instances/$1/metadata/chexd" |
    "$PY" -c 'import json, sys; d = json.load(sys.stdin)["dicom"]; sys.exit(0 if d["transfer_syntax"] == sys.argv[1] and d["frame"] == 1 else 1)' "$2" ||
    fail "instance $1 was not classified from its stored syntax $2"
}
dx4=$(store "$tmp/dx4-jpegls.dcm" -xt)
wait_status "$dx4" ok 60
check_stored "$dx4" "$tmp/dx4.dcm"
sent_as_stored "$dx4" 1.2.840.10008.1.2.4.80
echo "orthanc: JPEG-LS instance classified as stored, same answer as its uncompressed source"
j2k=$(store tests/data/dicom-compressed/RG3_J2KR.dcm -xv)
wait_status "$j2k" ok 60
check_stored "$j2k" tests/data/dicom-compressed/RG3_J2KR.dcm
sent_as_stored "$j2k" 1.2.840.10008.1.2.4.90
# the real JPEG Lossless CR, with the birth date check_stored looks for
"$PY" -c 'import sys, pydicom; d = pydicom.dcmread(sys.argv[1]); d.PatientBirthDate = "19700101"; d.save_as(sys.argv[2])' \
  tests/data/dicom-compressed/RG2_JPLL.dcm "$tmp/rg2-jpll.dcm"
jpll=$(store "$tmp/rg2-jpll.dcm" -xs)
wait_status "$jpll" ok 60
check_stored "$jpll" "$tmp/rg2-jpll.dcm"
sent_as_stored "$jpll" 1.2.840.10008.1.2.4.70
echo "orthanc: JPEG 2000 and JPEG Lossless CRs classified as stored (no transcoding)"

# ---- 4. an image chexd refuses: recorded as failed, not retried -------------------------
small=$(store "$tmp/small.dcm")
wait_status "$small" "failed: chexd answered 422" 30
echo "orthanc: 48x48 image -> '$(status_of "$small" | cut -c1-90)'"

# ---- 5. reclassify the whole study through the plugin's route ---------------------------
orth GET "/instances/$dx1/metadata/chexd" >"$tmp/before1.json"
orth GET "/instances/$dx2/metadata/chexd" >"$tmp/before2.json"
study_id=$(orth GET "/instances/$dx1/study" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["ID"])')
orth GET "/studies/$study_id/series" >"$tmp/series.json"
orth POST "/chexd/studies/$study_id/classify" -d '' >"$tmp/route.json"
"$PY" - "$tmp/route.json" "$tmp/series.json" "$ot" "$dx1" "$dx2" "$dx4" "$small" "$dx7" "$dx8" <<'EOF'
import json, sys
r, series = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
want = set(sys.argv[4:])
assert set(r["queued"]) == want, r
# the OT instance and the plugin's own Structured Reports (StoreSR is on by default)
srs = {i for s in series if s["MainDicomTags"].get("Modality") == "SR" for i in s["Instances"]}
assert len(srs) == 5, f"{len(srs)} SR instances in the study, expected one per classified DX (5)"
assert sorted(r["skipped_modality"]) == sorted({sys.argv[3]} | srs), r
EOF
for id in "$dx1" "$dx2" "$dx4" "$dx7" "$dx8"; do wait_status "$id" ok 60; done
wait_status "$small" "failed: chexd answered 422" 30
for pair in "$dx1:before1" "$dx2:before2"; do
  id=${pair%%:*}
  orth GET "/instances/$id/metadata/chexd" >"$tmp/after.json"
  "$PY" - "$tmp/${pair#*:}.json" "$tmp/after.json" <<'EOF'
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert a["request_id"] != b["request_id"], "study route did not reclassify"
assert a["predictions"] == b["predictions"], "reclassification changed the answer"
EOF
done
check_stored "$dx1" "$tmp/dx1.dcm"
[ "$(orth_code POST "/chexd/instances/$ot/classify")" = 400 ] || fail "instance route accepted an OT instance"
[ "$(orth_code POST "/chexd/instances/0000-no-such-instance/classify")" = 404 ] || fail "instance route: unknown id not 404"
[ "$(orth_code GET "/chexd/instances/$dx1/classify")" = 405 ] || fail "instance route: GET not 405"
orth POST "/chexd/instances/$dx1/classify" -d '' | grep -q "$dx1" || fail "instance route did not queue"
wait_status "$dx1" ok 30
echo "orthanc: study route requeued 6 instances (OT and the 5 SRs skipped), answers renewed; instance route 200/400/404/405"

# ---- 6. chexd down for good: the failure is recorded after the last attempt -------------
stop_chexd
dx6=$(store "$tmp/dx6.dcm")
wait_status "$dx6" "failed after" 120
status_of "$dx6" | grep -q "chexd unreachable" || fail "dx6: '$(status_of "$dx6")' does not say chexd is unreachable"
echo "orthanc: chexd gone -> '$(status_of "$dx6" | cut -c1-90)'"
orth GET /chexd/status >"$tmp/status.json"
"$PY" - "$tmp/status.json" "$small" "$dx6" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
c = s["counters"]
print(f"orthanc: plugin counters {json.dumps(c, sort_keys=True)}")
assert c["ok"] >= 9 and c["failed"] >= 3 and c["retried"] >= 4 and c["skipped"] >= 1, c
assert s["pending"] == 0 and s["retrying"] == 0 and s["failed"] == 2, s   # small (422) and dx6
assert {f["id"] for f in s["recent_failures"]} == set(sys.argv[2:]), s["recent_failures"]
assert s["chexd"]["state"] == "retrying" and "unreachable" in s["chexd"]["last_error"], s["chexd"]
assert s["config"]["TokenFile"], s["config"]
EOF

stop_orthanc

# ---- 7. a window of 1 id: nothing refused, nothing lost, memory bounded ------------------
# Same storage, Orthanc restarted with QueueSize 1 (ids held in memory); chexd frozen so
# the worker holds one instance while two more arrive: they wait in the plugin's store.
"$PY" -c 'import json, sys; c = json.load(open(sys.argv[1])); c["Chexd"]["QueueSize"] = 1; json.dump(c, open(sys.argv[2], "w"))' \
  "$tmp/orthanc.json" "$tmp/orthanc-q1.json"
for n in 9 10 11; do mk tests/data/00000002_000.png "$tmp/dx$n.dcm" --series "$series" --number "$n"; done
start_chexd
start_orthanc "$tmp/orthanc-q1.json"
orth GET "/instances/$dx1/metadata/chexd-status" | grep -qx ok || fail "results lost across an Orthanc restart"
kill -STOP "$chexd_pid"
dx9=$(store "$tmp/dx9.dcm")
wait_until 60 "the worker taking dx9" worker_took 1 -
dx10=$(store "$tmp/dx10.dcm")
dx11=$(store "$tmp/dx11.dcm")
orth GET /chexd/status | "$PY" -c '
import json, sys
s = json.load(sys.stdin)
assert s["pending"] == 3 and s["in_flight"] == 1 and s["in_memory"] <= 2 and s["queue_size"] == 1, s
print("orthanc: window of 1 id, chexd frozen: 3 instances pending in the store, %d id(s) in memory" % s["in_memory"])'
kill -CONT "$chexd_pid"
for id in "$dx9" "$dx10" "$dx11"; do wait_status "$id" ok 60; done
orth GET /chexd/status | "$PY" -c 'import json,sys; s = json.load(sys.stdin); c = s["counters"]; assert c["ok"] == 3 and s["pending"] == 0 and s["retrying"] == 0, s'
echo "orthanc: window of 1 -> all 3 classified, none refused"
orth POST "/chexd/failed/requeue" -d '' | grep -q '"queued": 2' || fail "requeue of the 2 failed instances"
wait_status "$dx6" ok 60
wait_status "$small" "failed: chexd answered 422" 30
echo "orthanc: the 2 failed instances requeued through /chexd/failed/requeue -> dx6 ok, the 48x48 one refused again (422)"
stop_orthanc
grep -q "chexd: 1 worker(s)" "$tmp/orthanc.log" || fail "plugin start line missing from Orthanc's log"
! grep -qi "Traceback" "$tmp/orthanc.log" || fail "Python traceback in Orthanc's log"
echo "orthanc: ok"
