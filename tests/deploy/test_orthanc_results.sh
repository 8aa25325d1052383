#!/usr/bin/env bash
# tests/deploy/test_orthanc_results.sh - chexd's results reach the hospital PACS as DICOM:
# Debian's Orthanc 1.10 with deploy/orthanc/chexd_plugin.py (+ orthanc-dicomweb) as the AI
# node, bin/chexd with the demo model and a token, and a SECOND plain Orthanc with
# orthanc-dicomweb as "the hospital PACS" (C-STORE on port 4243, DICOMweb on 8043), all in a
# private network and PID namespace (tests/deploy/lib_orthanc.sh).
#
#   A. StoreSR on, StoreSC off, ForwardTo ["PACS", "NOWHERE"] (a DicomModalities entry, and
#      a name that is nothing): the PACS is DOWN when a real CR (tests/data, C-STOREd with
#      storescu) is classified. The study in the AI node gains one SR (Modality SR, chexd's
#      Comprehensive SR) whose 14 NUM items equal the JSON answer's probabilities
#      (|diff| <= 1e-6, 6 decimals), which references the source's SOP Instance UID (evidence
#      + IMAGE item) and Study Instance UID and is in the source's study; dciodvfy reports
#      no Error. The forward to PACS is recorded "retrying" (C-STORE refused) and the one to
#      NOWHERE "retrying" naming the unknown destination; the PACS is started: the SR
#      arrives there by C-STORE (Origin DicomProtocol, calling AET ORTHANC), the source's
#      chexd-forward says PACS ok; dciodvfy passes on what arrived. The SR is not
#      classified (no chexd metadata, no SR of the SR, the instance route answers 400).
#      Reclassified through the plugin's route: the SR is replaced (the previous one deleted,
#      one SR in the study) and the new one forwarded.
#   B. Orthanc restarted (new storage) with StoreSC on and ForwardTo ["dicomweb:PACSWEB",
#      "modality:ARCHIVE"] (the DICOMweb plugin's Servers; dcmtk's storescp), the PACS
#      STOPPED again: a SIIM radiograph (Secondary Capture SOP class, Modality CR, JPEG: a
#      radiograph, classified) is uploaded by REST. The study gains the SR and the SC
#      (Modality OT, the top label's heat map); both reach storescp by C-STORE (dciodvfy
#      clean, SR NUM = JSON) while both are recorded "retrying" for PACSWEB; the PACS
#      restarted: both arrive there by STOW-RS (Origin not DicomProtocol), pass dciodvfy,
#      the SR's NUM = JSON; neither is classified.
#   C. the PACS frozen (SIGSTOP: it accepts connections, never answers), ForwardTimeoutSeconds
#      3: a new DX is classified, Orthanc's REST API and C-STORE answer while the STOW-RS
#      job hangs, storescp still gets the DX's SR and SC, PACSWEB is recorded retrying
#      ("no answer"); the PACS resumed: both arrive there, nothing left pending or failed.
# Every wait is on a condition with a deadline (Orthanc's REST polled), never a fixed sleep.
#   env: BIN, MODELS, PY (as given by tests/run_all.sh)
set -euo pipefail
self=$(readlink -f "${BASH_SOURCE[0]}")
. "$(dirname "$self")/lib_orthanc.sh"
orthanc_test_setup test_orthanc_results "$self" "${1:-}" storescu storescp dciodvfy
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] ||
  fail "orthanc-dicomweb missing (bash deploy/install-deps.sh --test)"
t_start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - t_start )) s"; }

CHEXD_PORT=8080 HTTP_PORT=8042 DICOM_PORT=4242 PACS_HTTP=8043 PACS_DICOM=4243 ARCHIVE_DICOM=4244
USER_PW="chexd-test:$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tmp/token"
CHEXD_ARGS=(--api-token-file "$tmp/token")
pacs_pid= storescp_pid=

config() { # OUT DB-DIR [KEY=JSON ...]: the shipped orthanc.json, test ports/storage, Chexd overrides
  local out=$1 db=$2; shift 2
  mkdir -p "$db"
  "$PY" - "$ROOT/deploy/orthanc/orthanc.json" "$db" "$USER_PW" "$ROOT/deploy/orthanc/chexd_plugin.py" \
    "$tmp/token" "$@" >"$out" <<EOF
import json, sys
cfg = json.load(open(sys.argv[1]))
assert "/usr/share/orthanc/plugins/libOrthancDicomWeb.so" in cfg["Plugins"], "shipped orthanc.json loads DICOMweb"
db, user_pw, plugin, token = sys.argv[2:6]
user, pw = user_pw.split(":", 1)
cfg.update({
    "Name": "CHEXD-AI", "StorageDirectory": db, "IndexDirectory": db,
    "HttpPort": $HTTP_PORT, "DicomPort": $DICOM_PORT, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
    "AuthenticationEnabled": True, "RegisteredUsers": {user: pw}, "PythonScript": plugin,
    "DicomModalities": {"PACS": ["PACS", "127.0.0.1", $PACS_DICOM],
                        "ARCHIVE": ["ARCHIVE", "127.0.0.1", $ARCHIVE_DICOM]},
    "DicomWeb": {"Enable": True, "Root": "/dicom-web/",
                 "Servers": {"PACSWEB": ["http://127.0.0.1:$PACS_HTTP/dicom-web/", user, pw]}},
})
cfg["Chexd"].update({"Url": "http://127.0.0.1:$CHEXD_PORT/v1/predict", "CAFile": "", "TokenFile": token,
                     "BackoffSeconds": 0.5, "MaxBackoffSeconds": 2})
for kv in sys.argv[6:]:
    k, v = kv.split("=", 1)
    cfg["Chexd"][k] = json.loads(v)
json.dump(cfg, sys.stdout, indent=2)
EOF
}
# The hospital PACS: a plain Orthanc with DICOMweb, its storage kept across its restarts.
mkdir -p "$tmp/pacs-db"
"$PY" - "$tmp/pacs-db" "$USER_PW" >"$tmp/pacs.json" <<EOF
import json, sys
user, pw = sys.argv[2].split(":", 1)
json.dump({"Name": "HOSPITAL-PACS", "StorageDirectory": sys.argv[1], "IndexDirectory": sys.argv[1],
           "HttpPort": $PACS_HTTP, "DicomPort": $PACS_DICOM, "DicomAet": "PACS", "RemoteAccessAllowed": False,
           "AuthenticationEnabled": True, "RegisteredUsers": {user: pw},
           "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
           "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}, sys.stdout, indent=2)
EOF
start_pacs() {
  launch_orthanc "$tmp/pacs.json" "$PACS_HTTP" "$tmp/pacs-orthanc.log"
  pacs_pid=$launched_pid extra_pids="$launched_pid $storescp_pid"
}
stop_pacs() { kill -TERM "$pacs_pid"; wait "$pacs_pid" || fail "PACS exited non-zero"; pacs_pid= extra_pids=$storescp_pid; }

lookup_at() { # PORT UID -> Orthanc instance id, or nothing
  orth_at "$1" POST /tools/lookup --data-binary "$2" |
    "$PY" -c 'import json, sys; r = [x["ID"] for x in json.load(sys.stdin) if x["Type"] == "Instance"]; print(r[0] if r else "")'
}
uid_of() { "$PY" -c 'import sys, pydicom; print(pydicom.dcmread(sys.argv[1], stop_before_pixels=True).SOPInstanceUID)' "$1"; }
meta() { orth GET "/instances/$1/metadata/$2" 2>/dev/null || true; }
status_is_ok() { [ "$(meta "$1" chexd-status)" = ok ]; }
forward_is() { # SOURCE DEST KIND PREFIX: the source's chexd-forward says DEST/KIND starts with PREFIX
  meta "$1" chexd-forward | "$PY" -c 'import json, sys; f = json.load(sys.stdin); sys.exit(0 if f.get(sys.argv[1], {}).get(sys.argv[2], "").startswith(sys.argv[3]) else 1)' "$2" "$3" "$4" 2>/dev/null
}
in_pacs() { [ -n "$(lookup_at "$PACS_HTTP" "$1")" ]; }
result_uid() { # SOURCE KIND -> SOP Instance UID of the stored SR/SC named by chexd-results
  local id; id=$(meta "$1" chexd-results | "$PY" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2")
  orth GET "/instances/$id/tags?simplify" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["SOPInstanceUID"])'
}
dciodvfy_ok() { # FILE WHAT
  dciodvfy "$1" >"$tmp/dciodvfy.txt" 2>&1 || true
  ! grep -q '^Error' "$tmp/dciodvfy.txt" || fail "dciodvfy: $2: $(grep '^Error' "$tmp/dciodvfy.txt" | head -3)"
}
# The SR (file) against the source (file) and chexd's JSON answer (file).
check_sr() { # SR SOURCE JSON WHAT
  "$PY" - "$@" <<'EOF'
import json, sys
import pydicom
sr, src, answer, what = pydicom.dcmread(sys.argv[1]), pydicom.dcmread(sys.argv[2], stop_before_pixels=True), \
    json.load(open(sys.argv[3])), sys.argv[4]
assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33" and sr.Modality == "SR", (sr.SOPClassUID, sr.Modality)
assert sr.StudyInstanceUID == src.StudyInstanceUID, "SR not in the source's study"
assert sr.SeriesInstanceUID != src.SeriesInstanceUID, "SR not in a new series"
assert sr.Manufacturer == "chexd"
ev = sr.CurrentRequestedProcedureEvidenceSequence[0]
assert ev.StudyInstanceUID == src.StudyInstanceUID
ref = ev.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID and ref.ReferencedSOPClassUID == src.SOPClassUID, ref
nums, images = {}, []
for it in sr.ContentSequence:
    if it.ValueType == "NUM":
        mv = it.MeasuredValueSequence[0]
        assert len(str(mv.NumericValue).split(".")[1]) == 6, mv.NumericValue
        nums[it.ConceptNameCodeSequence[0].CodeMeaning] = float(mv.NumericValue)
    elif it.ValueType == "IMAGE":
        images.append(it.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
probs = {p["label"]: p["probability"] for p in answer["predictions"]}
assert len(nums) == 14 and set(nums) == set(probs), (sorted(nums), sorted(probs))
worst = max(abs(nums[k] - probs[k]) for k in nums)
assert worst <= 1e-6, f"SR NUM differs from chexd's JSON by {worst}"
assert images == [src.SOPInstanceUID], images
print(f"test_orthanc_results: {what}: 14 NUM = JSON (max diff {worst:.1e}), references source SOP "
      f"{src.SOPInstanceUID[-12:]} and its study")
EOF
}
not_classified() { # ID WHAT: chexd's own result is never classified
  [ -z "$(meta "$1" chexd-status)" ] && [ -z "$(meta "$1" chexd)" ] || fail "$2 was classified: '$(meta "$1" chexd-status)'"
  [ "$(orth_code POST "/chexd/instances/$1/classify")" = 400 ] || fail "instance route accepted $2"
}
results_in_study() { # SOURCE -> "MODALITY:COUNT ..." of chexd's series in the source's study
  orth GET "/instances/$1/study" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["ID"])' >"$tmp/study_id"
  orth GET "/studies/$(cat "$tmp/study_id")/series" | "$PY" -c '
import json, sys
got = sorted("%s:%d" % (s["MainDicomTags"].get("Modality"), len(s["Instances"]))
             for s in json.load(sys.stdin) if s["MainDicomTags"].get("Manufacturer") == "chexd")
print(" ".join(got))'
}
origin_in_pacs() { # UID -> "Origin RemoteAET" of the PACS copy
  local id; id=$(lookup_at "$PACS_HTTP" "$1")
  echo "$(orth_at "$PACS_HTTP" GET "/instances/$id/metadata/Origin") $(orth_at "$PACS_HTTP" GET "/instances/$id/metadata/RemoteAET" 2>/dev/null || true)"
}
pacs_file() { # UID OUT
  orth_at "$PACS_HTTP" GET "/instances/$(lookup_at "$PACS_HTTP" "$1")/file" -o "$2"
}

start_chexd
echo "test_orthanc_results: chexd up ($(elapsed))"

# ---- A. SR by C-STORE, the PACS down at first ---------------------------------------------
config "$tmp/ai-a.json" "$tmp/db-a" 'ForwardTo=["PACS", "NOWHERE"]'
start_orthanc "$tmp/ai-a.json"
src=tests/data/cr-mono1-10-chest.dcm
timeout 60 storescu -aet MODALITY -aec ORTHANC 127.0.0.1 "$DICOM_PORT" "$src" >>"$tmp/storescu.log" 2>&1 ||
  fail "storescu $src: $(tail -n 3 "$tmp/storescu.log")"
a=$(lookup_at "$HTTP_PORT" "$(uid_of "$src")")
[ -n "$a" ] || fail "the CR is not in the AI node"
wait_until 120 "A: the CR classified" status_is_ok "$a"
[ "$(results_in_study "$a")" = "SR:1" ] || fail "A: chexd's series in the study: '$(results_in_study "$a")', expected SR:1"
orth GET "/instances/$a/metadata/chexd" >"$tmp/a.json"
sr_a=$(meta "$a" chexd-results | "$PY" -c 'import json, sys; r = json.load(sys.stdin); assert set(r) == {"sr"}, r; print(r["sr"])')
orth GET "/instances/$sr_a/file" -o "$tmp/a-sr.dcm"
check_sr "$tmp/a-sr.dcm" "$src" "$tmp/a.json" "A: SR stored in the AI node"
dciodvfy_ok "$tmp/a-sr.dcm" "A: SR in the AI node"
wait_until 60 "A: the failed C-STORE to the PACS recorded as retrying" forward_is "$a" PACS sr "retrying (attempt"
wait_until 60 "A: the unknown destination recorded as retrying" forward_is "$a" NOWHERE sr "retrying (attempt"
meta "$a" chexd-forward | grep -q "neither in Orthanc's DicomModalities nor in the DICOMweb plugin's Servers" ||
  fail "A: NOWHERE's failure does not say why: $(meta "$a" chexd-forward)"
echo "test_orthanc_results: A: PACS down -> $(meta "$a" chexd-forward | cut -c1-150)..."
sr_uid=$(result_uid "$a" sr)
t0=$(date +%s)
start_pacs
wait_until 120 "A: the SR reaching the PACS by C-STORE after it came up" in_pacs "$sr_uid"
wait_until 30 "A: chexd-forward saying PACS ok" forward_is "$a" PACS sr ok
echo "test_orthanc_results: A: PACS up -> SR there $(( $(date +%s) - t0 )) s later; chexd-forward $(meta "$a" chexd-forward | cut -c1-60)..."
[ "$(origin_in_pacs "$sr_uid")" = "DicomProtocol ORTHANC" ] || fail "A: the SR did not arrive by C-STORE from ORTHANC: $(origin_in_pacs "$sr_uid")"
pacs_file "$sr_uid" "$tmp/a-sr-pacs.dcm"
check_sr "$tmp/a-sr-pacs.dcm" "$src" "$tmp/a.json" "A: SR received by the PACS (C-STORE)"
dciodvfy_ok "$tmp/a-sr-pacs.dcm" "A: SR received by the PACS"
not_classified "$sr_a" "A: the SR"
# Reclassified: the SR is replaced (still one in the study) and the new one forwarded too.
orth POST "/chexd/instances/$a/classify" -d '' >/dev/null
sr_replaced() {
  [ "$(meta "$a" chexd-results | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["sr"])')" != "$sr_a" ] &&
    status_is_ok "$a"
}
wait_until 60 "A: the reclassification storing a new SR" sr_replaced
[ "$(results_in_study "$a")" = "SR:1" ] || fail "A: after reclassification: '$(results_in_study "$a")', expected SR:1"
[ "$(orth_code GET "/instances/$sr_a")" = 404 ] || fail "A: the previous SR was not deleted"
wait_until 60 "A: the new SR forwarded to the PACS" in_pacs "$(result_uid "$a" sr)"
echo "test_orthanc_results: A: reclassified -> the SR replaced in the study (previous one deleted), the new one forwarded"
orth GET /chexd/status >"$tmp/status-a.json"
"$PY" - "$tmp/status-a.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
f = s["forward"]
assert s["counters"]["ok"] == 2 and s["counters"]["skipped"] >= 2 and s["pending"] == 0, s["counters"]
assert f["counters"]["ok"] == 2 and f["counters"]["retried"] >= 2 and f["retrying"] >= 1 and f["failed"] == 0, f
assert f["gates"]["PACS"]["state"] == "ok" and f["gates"]["NOWHERE"]["state"] == "retrying", f["gates"]
print("test_orthanc_results: A: /chexd/status forward %s" % json.dumps(f["counters"], sort_keys=True))
EOF
stop_orthanc

# ---- B. SR + SC by STOW-RS, the PACS stopped meanwhile; by C-STORE to dcmtk's storescp ----
stop_pacs
mkdir -p "$tmp/archive"
storescp -aet ARCHIVE -od "$tmp/archive" "$ARCHIVE_DICOM" >>"$tmp/storescp.log" 2>&1 &
storescp_pid=$! extra_pids=$!
config "$tmp/ai-b.json" "$tmp/db-b" 'ForwardTo=["dicomweb:PACSWEB", "modality:ARCHIVE"]' 'StoreSC=true' \
  'ForwardTimeoutSeconds=3'
start_orthanc "$tmp/ai-b.json"
src=tests/data/siim-pneumothorax-sample.dcm
b=$(orth POST /instances --data-binary @"$src" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["ID"])')
wait_until 120 "B: the SIIM CR (Secondary Capture class) classified" status_is_ok "$b"
[ "$(results_in_study "$b")" = "OT:1 SR:1" ] || fail "B: chexd's series in the study: '$(results_in_study "$b")', expected OT:1 SR:1"
orth GET "/instances/$b/metadata/chexd" >"$tmp/b.json"
meta "$b" chexd-results >"$tmp/b-results.json"
"$PY" - "$tmp/b.json" "$tmp/b-results.json" <<'EOF'
import json, sys
answer, r = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
top = max(answer["predictions"], key=lambda p: p["probability"])["label"]
assert set(r) == {"sr", "sc", "label"} and r["label"] == top, (r, top)
EOF
sr_b=$(meta "$b" chexd-results | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["sr"])')
sc_b=$(meta "$b" chexd-results | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["sc"])')
wait_until 60 "B: the failed STOW-RS of the SR recorded as retrying" forward_is "$b" dicomweb:PACSWEB sr "retrying"
wait_until 60 "B: the failed STOW-RS of the SC recorded as retrying" forward_is "$b" dicomweb:PACSWEB sc "retrying"
echo "test_orthanc_results: B: PACS down -> $(meta "$b" chexd-forward | cut -c1-150)..."
sr_uid=$(result_uid "$b" sr) sc_uid=$(result_uid "$b" sc)
# Meanwhile the other destination, storescp, got both by C-STORE.
in_archive() { # UID: storescp wrote it (prints the file)
  "$PY" - "$tmp/archive" "$1" <<'EOF'
import os, sys
import pydicom
for f in os.listdir(sys.argv[1]):
    try:
        if pydicom.dcmread(os.path.join(sys.argv[1], f), stop_before_pixels=True).SOPInstanceUID == sys.argv[2]:
            print(os.path.join(sys.argv[1], f))
            sys.exit(0)
    except Exception:
        pass   # being written
sys.exit(1)
EOF
}
wait_until 60 "B: the SR reaching storescp (C-STORE) while the PACS is down" in_archive "$sr_uid" >/dev/null
wait_until 60 "B: the SC reaching storescp (C-STORE) while the PACS is down" in_archive "$sc_uid" >/dev/null
wait_until 30 "B: chexd-forward saying ARCHIVE ok" forward_is "$b" modality:ARCHIVE sc ok
forward_is "$b" modality:ARCHIVE sr ok || fail "B: $(meta "$b" chexd-forward)"
forward_is "$b" dicomweb:PACSWEB sr retrying || fail "B: PACSWEB should still be retrying: $(meta "$b" chexd-forward)"
check_sr "$(in_archive "$sr_uid")" "$src" "$tmp/b.json" "B: SR received by storescp (C-STORE)"
dciodvfy_ok "$(in_archive "$sr_uid")" "B: SR received by storescp"
dciodvfy_ok "$(in_archive "$sc_uid")" "B: SC received by storescp"
echo "test_orthanc_results: B: storescp got SR and SC by C-STORE while PACSWEB was down (dciodvfy clean)"
t0=$(date +%s)
start_pacs
wait_until 120 "B: the SR reaching the PACS by STOW-RS" in_pacs "$sr_uid"
wait_until 120 "B: the SC reaching the PACS by STOW-RS" in_pacs "$sc_uid"
wait_until 30 "B: chexd-forward saying ok for both" forward_is "$b" dicomweb:PACSWEB sc ok
forward_is "$b" dicomweb:PACSWEB sr ok || fail "B: $(meta "$b" chexd-forward)"
echo "test_orthanc_results: B: PACS up -> SR and SC there $(( $(date +%s) - t0 )) s later"
for uid in "$sr_uid" "$sc_uid"; do
  o=$(origin_in_pacs "$uid")
  case $o in DicomProtocol*) fail "B: $uid arrived by C-STORE, not STOW-RS ($o)" ;; esac
done
pacs_file "$sr_uid" "$tmp/b-sr-pacs.dcm"
pacs_file "$sc_uid" "$tmp/b-sc-pacs.dcm"
check_sr "$tmp/b-sr-pacs.dcm" "$src" "$tmp/b.json" "B: SR received by the PACS (STOW-RS, origin $(origin_in_pacs "$sr_uid"))"
dciodvfy_ok "$tmp/b-sr-pacs.dcm" "B: SR received by the PACS"
dciodvfy_ok "$tmp/b-sc-pacs.dcm" "B: SC received by the PACS"
"$PY" - "$tmp/b-sc-pacs.dcm" "$src" "$(cat "$tmp/b-results.json")" <<'EOF'
import json, sys
import pydicom
sc, src, r = pydicom.dcmread(sys.argv[1]), pydicom.dcmread(sys.argv[2], stop_before_pixels=True), json.loads(sys.argv[3])
assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and sc.Modality == "OT" and sc.Manufacturer == "chexd"
assert sc.StudyInstanceUID == src.StudyInstanceUID and sc.PhotometricInterpretation == "RGB"
assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
assert r["label"] in sc.DerivationDescription, (r["label"], sc.DerivationDescription)
assert sc.pixel_array.shape == (src.Rows, src.Columns, 3), sc.pixel_array.shape
print(f"test_orthanc_results: B: SC received by the PACS: {sc.Rows}x{sc.Columns} RGB heat map of {r['label']}, "
      "references the source, dciodvfy clean")
EOF
not_classified "$sr_b" "B: the SR"
not_classified "$sc_b" "B: the SC"
orth GET /chexd/status | "$PY" -c '
import json, sys
s = json.load(sys.stdin)
f = s["forward"]
assert s["counters"]["ok"] == 1 and s["counters"]["skipped"] >= 2 and s["pending"] == 0, s["counters"]
assert f["counters"]["ok"] == 4 and f["pending"] + f["retrying"] + f["failed"] == 0, f'

# ---- C. the PACS hangs (SIGSTOP): Orthanc, classification and the other destination go on --
kill -STOP "$pacs_pid"
"$PY" tests/deploy/make_dx.py tests/data/00000001_000.png "$tmp/c.dcm"
c=$(orth POST /instances --data-binary @"$tmp/c.dcm" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["ID"])')
wait_until 120 "C: the DX classified while the PACS hangs" status_is_ok "$c"
sr_uid=$(result_uid "$c" sr) sc_uid=$(result_uid "$c" sc)
job_running() { orth GET "/jobs?expand" | "$PY" -c 'import json, sys; sys.exit(0 if any(j["State"] == "Running" for j in json.load(sys.stdin)) else 1)'; }
wait_until 60 "C: a STOW-RS job hanging on the frozen PACS" job_running
worst=0
for path in /system /instances /chexd/status "/instances/$c/metadata/chexd-forward" /jobs; do
  ms=$(curl -s -o /dev/null --max-time 5 -w '%{http_code} %{time_total}' -u "$USER_PW" "http://127.0.0.1:$HTTP_PORT$path")
  [ "${ms%% *}" = 200 ] || fail "C: REST $path answered '$ms' while a forward hangs"
  worst=$("$PY" -c "print(max($worst, ${ms#* } * 1000))")
done
timeout 10 storescu -aet MODALITY -aec ORTHANC 127.0.0.1 "$DICOM_PORT" "$tmp/c.dcm" >>"$tmp/storescu.log" 2>&1 ||
  fail "C: C-STORE failed or blocked while a forward hangs"
wait_until 60 "C: the SR reaching storescp while the PACS hangs" in_archive "$sr_uid" >/dev/null
wait_until 60 "C: the SC reaching storescp while the PACS hangs" in_archive "$sc_uid" >/dev/null
wait_until 30 "C: the hanging STOW-RS recorded as retrying" forward_is "$c" dicomweb:PACSWEB sr "retrying"
meta "$c" chexd-forward | grep -q "no answer within 3 s\|is not answering" ||
  fail "C: chexd-forward does not say the PACS hangs: $(meta "$c" chexd-forward)"
echo "test_orthanc_results: C: PACS frozen -> REST answered (slowest $(printf '%.1f' "$worst") ms), C-STORE accepted, the DX classified, storescp got its SR and SC; PACSWEB: $(meta "$c" chexd-forward | grep -o 'dicomweb:PACSWEB": {"sc": "[^;]*' | cut -c1-110)"
# No pile of hung jobs: while the given-up job still runs, nothing more goes to that PACS.
wait_until 30 "C: the next attempt refused while the hung job runs" \
  eval 'meta "$c" chexd-forward | grep -q "is not answering: job"'
orth GET "/jobs?expand" | "$PY" -c '
import json, sys
busy = [j["ID"] for j in json.load(sys.stdin) if j["State"] in ("Running", "Pending", "Retry")]
assert len(busy) <= 1, f"{len(busy)} jobs piled up on the hung PACS"'
kill -CONT "$pacs_pid"
wait_until 120 "C: the SR reaching the PACS once it answers again" in_pacs "$sr_uid"
wait_until 120 "C: the SC reaching the PACS once it answers again" in_pacs "$sc_uid"
wait_until 60 "C: chexd-forward saying ok everywhere" forward_is "$c" dicomweb:PACSWEB sc ok
forward_is "$c" dicomweb:PACSWEB sr ok || fail "C: $(meta "$c" chexd-forward)"
orth GET /chexd/status | "$PY" -c '
import json, sys
f = json.load(sys.stdin)["forward"]
assert f["counters"]["ok"] == 8 and f["pending"] + f["retrying"] + f["failed"] == 0, f
print("test_orthanc_results: C: PACS answering again -> SR and SC delivered; forward counters %s" % json.dumps(f["counters"], sort_keys=True))'
stop_orthanc
stop_pacs
kill "$storescp_pid"; wait "$storescp_pid" 2>/dev/null || true; storescp_pid= extra_pids=
for log in "$tmp/orthanc.log" "$tmp/pacs-orthanc.log"; do
  ! grep -qi "Traceback" "$log" || fail "Python traceback in $(basename "$log")"
done
echo "test_orthanc_results: ok ($(elapsed))"
