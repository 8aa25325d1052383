#!/usr/bin/env bash
# tests/deploy/test_dicomweb_tool.sh - deploy/pacs/chex-dicomweb against a real DICOMweb
# PACS: Debian's Orthanc 1.10 with its orthanc-dicomweb plugin (QIDO-RS, WADO-RS, STOW-RS;
# HTTP basic authentication), and bin/chexd with the demo model, TLS (test CA) and a
# bearer token. Orthanc cannot bind to loopback only, so everything runs in a private
# network and PID namespace (unshare -n -p, as root); processes are stopped by PID.
#
# In the PACS: a CR (explicit VR), a CR stored as JPEG Baseline (SIIM, Secondary Capture
# class), a JPEG Lossless CR (NEMA WG04), a DX made from a real radiograph, a 48x48 DX
# chexd refuses, and non-images (an OT Secondary Capture, another vendor's SR).
# Checks:
#  - --since: only the dated studies in range (--threshold 0: 14 findings); chexd frozen while the tool waits on it,
#    then killed (SIGKILL) mid-request and started late: the tool retries and finishes
#    (exit 0); a second run on the same checkpoint meanwhile exits 3 (lock);
#  - a rerun does nothing new; --since last; --study for the undated ones; STOW failing -> the SR made
#    is kept (exit 3), the next run stores that same SR (same SOP Instance UID) without
#    classifying again; a crash between STOW and checkpoint re-sends it, the PACS keeps one; --stow-url to a second Orthanc; chexd's 422 recorded, not retried;
#    chexd's 503 + Retry-After (from a gate in front of chexd) waited as told;
#  - every image has exactly one chexd SR in the PACS, in its study, whose NUM values equal
#    chexd's JSON /v1/predict on the same file (|diff| <= 1e-6); no SR for a non-image;
#  - a fresh checkpoint over --all lists only the 5 images (chexd's SRs are never
#    classified), also with the python3 on PATH; wrong PACS password and wrong chexd token exit 2.
#   env: BIN, MODELS, PY (as given by tests/run_all.sh)
set -euo pipefail
self=$(readlink -f "${BASH_SOURCE[0]}")
cd "$(dirname "$self")/../.."
ROOT=$PWD
BIN=${BIN:-bin}; MODELS=${MODELS:-models}; PY=${PY:-/usr/bin/python3}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
case $MODELS in /*) ;; *) MODELS=$ROOT/$MODELS ;; esac
export BIN MODELS PY
TOOL=$ROOT/deploy/pacs/chex-dicomweb
DICOMWEB_SO=/usr/share/orthanc/plugins/libOrthancDicomWeb.so

if [ "${1:-}" != --in-namespace ]; then
  [ "$(id -u)" -eq 0 ] || { echo "test_dicomweb_tool: needs root (unshare -n)" >&2; exit 1; }
  for f in "$BIN/chexd" "$BIN/chex" "$MODELS/chexnet-demo.safetensors"; do
    [ -e "$f" ] || { echo "test_dicomweb_tool: $f missing (run make)" >&2; exit 1; }
  done
  for tool in Orthanc unshare ip curl openssl; do
    command -v "$tool" >/dev/null || { echo "test_dicomweb_tool: '$tool' missing (bash deploy/install-deps.sh --test)" >&2; exit 1; }
  done
  [ -e "$DICOMWEB_SO" ] || { echo "test_dicomweb_tool: orthanc-dicomweb missing (bash deploy/install-deps.sh --test)" >&2; exit 1; }
  exec unshare -n -p --kill-child bash "$self" --in-namespace
fi

ip link set lo up
tmp=$(mktemp -d)
chexd_pid= pacs_pid= archive_pid= tool_pid= gate_pid=
cleanup() {
  local rc=$?
  if [ $rc -ne 0 ]; then
    for f in tool.err pacs.log chexd.log; do
      echo "--- $f (tail)" >&2; tail -n 25 "$tmp/$f" >&2 2>/dev/null || true
    done
  fi
  # (a killed process's status, e.g. 137, must not become the test's under set -e)
  for p in $tool_pid $gate_pid $pacs_pid $archive_pid; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  [ -n "$chexd_pid" ] && kill -KILL "$chexd_pid" 2>/dev/null && wait "$chexd_pid" 2>/dev/null || true
  rm -rf "$tmp"
  return $rc
}
trap cleanup EXIT
fail() { echo "test_dicomweb_tool: FAIL: $*" >&2; exit 1; }
wait_until() { # TIMEOUT_S WHAT COMMAND...: polls COMMAND until it succeeds, fails at the deadline
  local end=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    [ $SECONDS -lt $end ] || fail "$what: not within the deadline"
    sleep 0.2
  done
}

CHEXD_PORT=8080 PACS_PORT=8042 ARCHIVE_PORT=8043 GATE_PORT=8081 CLOSED_PORT=8099
MODEL=$MODELS/chexnet-demo.safetensors
bash deploy/make-secrets.sh "$tmp/secrets" localhost 127.0.0.1 >/dev/null
CA=$tmp/secrets/ca.pem
head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tmp/pacs-password"
echo wrong-password >"$tmp/bad-password"
echo wrong-token >"$tmp/bad-token"

# ---- chexd (TLS, token) ------------------------------------------------------------------
chexd_ready() { [ "$(curl -s --cacert "$CA" -o /dev/null -w '%{http_code}' "https://localhost:$CHEXD_PORT/readyz")" = 200 ]; }
start_chexd() {
  "$BIN/chexd" --listen 127.0.0.1 --port "$CHEXD_PORT" --model "$MODEL" --api-token-file "$tmp/secrets/token" \
    --tls-cert-file "$tmp/secrets/chexd.crt" --tls-key-file "$tmp/secrets/chexd.key" >>"$tmp/chexd.log" 2>&1 &
  chexd_pid=$!
  wait_until 60 "chexd ready" chexd_ready
}
chexd_has_request() { # a connection to (frozen) chexd holds request bytes chexd has not read
  "$PY" - "$CHEXD_PORT" <<'PY'
import sys
port = int(sys.argv[1])
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        rows = open(table).read().splitlines()[1:]
    except OSError:
        continue
    for row in rows:
        c = row.split()  # local, remote, state (01 established), tx_queue:rx_queue
        if int(c[1].rsplit(":", 1)[1], 16) == port and c[3] == "01" and int(c[4].split(":")[1], 16) > 0:
            sys.exit(0)
sys.exit(1)
PY
}

# ---- two Orthancs with the DICOMweb plugin: the PACS and an archive (--stow-url) ----------
start_orthanc() { # NAME HTTP_PORT DICOM_PORT -> sets $started_pid
  mkdir -p "$tmp/$1"
  "$PY" - "$tmp/$1" "$2" "$3" "$(cat "$tmp/pacs-password")" "$DICOMWEB_SO" >"$tmp/$1.json" <<'PY'
import json, sys
d, http, dicom, pw, so = sys.argv[1:6]
json.dump({"Name": "CHEXD-DICOMWEB-TEST", "StorageDirectory": d, "IndexDirectory": d,
           "HttpPort": int(http), "DicomPort": int(dicom), "RemoteAccessAllowed": False,
           "AuthenticationEnabled": True, "RegisteredUsers": {"pacs": pw},
           "Plugins": [so], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}, sys.stdout, indent=1)
PY
  Orthanc "$tmp/$1.json" >>"$tmp/$1.log" 2>&1 &
  started_pid=$!
  orthanc_up() { kill -0 "$started_pid" 2>/dev/null || fail "Orthanc $1 exited at start";
    curl -fs -o /dev/null -u "pacs:$(cat "$tmp/pacs-password")" "http://127.0.0.1:$2/system"; }
  wait_until 60 "Orthanc $1 up" orthanc_up "$1" "$2"
}
orth() { # PORT METHOD PATH [curl args] -> body
  local port=$1 m=$2 p=$3; shift 3
  curl -fsS -u "pacs:$(cat "$tmp/pacs-password")" -X "$m" "http://127.0.0.1:$port$p" "$@"
}
start_chexd
start_orthanc pacs "$PACS_PORT" 4242; pacs_pid=$started_pid
start_orthanc archive "$ARCHIVE_PORT" 4243; archive_pid=$started_pid
orth "$PACS_PORT" GET /dicom-web/studies >/dev/null || fail "the DICOMweb plugin does not answer QIDO-RS"
echo "dicomweb: Orthanc $(orth "$PACS_PORT" GET /system | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["Version"])') + DICOMweb plugin (PACS and archive), chexd with TLS and a token"

# ---- the PACS's content ------------------------------------------------------------------
src=$tmp/src
mkdir -p "$src"
cp tests/data/cr-mono1-10-chest.dcm "$src/a_cr.dcm"                    # CR, no StudyDate
cp tests/data/siim-pneumothorax-sample.dcm "$src/b_siim.dcm"           # CR as SC class, JPEG Baseline, 19010101
cp tests/data/dicom-compressed/RG2_JPLL.dcm "$src/c_jpll.dcm"          # CR, JPEG Lossless, 20040826
"$PY" tests/deploy/make_dx.py tests/data/00000002_000.png "$src/d_dx.dcm" --number 4   # DX, 20240102
"$PY" -c 'from PIL import Image; Image.open("tests/data/h0001.png").convert("L").resize((48, 48)).save("'"$tmp"'/small.png")'
"$PY" tests/deploy/make_dx.py "$tmp/small.png" "$src/e_small.dcm" --number 5
# non-images in A's study: an OT Secondary Capture and another vendor's SR (chex classify --sr
# of A, made to look foreign: Manufacturer, new UIDs, evidence pointing elsewhere)
mkdir -p "$tmp/sr0"
"$BIN/chex" classify --model "$MODEL" --sr "$tmp/sr0" "$src/a_cr.dcm" >/dev/null
"$PY" - "$src/a_cr.dcm" "$tmp/sr0"/*.dcm "$src" <<'PY'
import sys
import pydicom
from pydicom.uid import generate_uid
a = pydicom.dcmread(sys.argv[1])
a.SOPInstanceUID = a.file_meta.MediaStorageSOPInstanceUID = generate_uid()
a.SeriesInstanceUID = generate_uid()
a.Modality = "OT"
a.SOPClassUID = a.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
a.ConversionType = "WSD"
a.save_as(sys.argv[3] + "/n_ot.dcm")
sr = pydicom.dcmread(sys.argv[2])
sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
sr.SeriesInstanceUID = generate_uid()
sr.Manufacturer = "OTHER VENDOR"
sr.ContributingEquipmentSequence[0].Manufacturer = "OTHER VENDOR"
ev = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
ev.ReferencedSOPInstanceUID = generate_uid()
sr.save_as(sys.argv[3] + "/n_sr.dcm")
PY
for f in "$src"/*.dcm; do
  orth "$PACS_PORT" POST /instances --data-binary "@$f" >/dev/null || fail "upload $f"
done
uid() { "$PY" -c 'import sys, pydicom; print(getattr(pydicom.dcmread(sys.argv[1]), sys.argv[2]))' "$1" "$2"; }
study_a=$(uid "$src/a_cr.dcm" StudyInstanceUID); study_b=$(uid "$src/b_siim.dcm" StudyInstanceUID)
study_e=$(uid "$src/e_small.dcm" StudyInstanceUID)
echo "dicomweb: PACS holds $(orth "$PACS_PORT" GET /instances | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))') instances (5 images, 2 non-images)"

CK=$tmp/ck.json
RUNNER=   # the script's own #!/usr/bin/python3; step 4 runs it with the python3 on PATH
run_tool() { # RC_WANTED ARGS... -> runs the tool (stdout: $tmp/out, stderr: $tmp/tool.err), checks its exit
  local want=$1 rc=0; shift
  $RUNNER "$TOOL" --dicomweb "http://127.0.0.1:$PACS_PORT/dicom-web" --pacs-user pacs --pacs-password-file "$tmp/pacs-password" \
    --url "https://localhost:$CHEXD_PORT" --cacert "$CA" --token-file "$tmp/secrets/token" \
    --backoff 0.2 --max-backoff 1 --timeout 60 "$@" >"$tmp/out" 2>"$tmp/tool.err" || rc=$?
  [ "$rc" = "$want" ] || fail "chex-dicomweb $* exited $rc, expected $want: $(cat "$tmp/out") $(tail -n 5 "$tmp/tool.err")"
}
summary_has() { grep -q "$1" "$tmp/out" || fail "summary '$(cat "$tmp/out")' lacks '$1'"; }
pacs_srs() { orth "$PACS_PORT" POST /tools/find -d '{"Level":"Series","Query":{"Modality":"SR"}}' |
  "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))'; }

# ---- 1. --since: chexd frozen, killed mid-request, started late: retries, then done -------
run_tool 0 --since 2000-01-01 --checkpoint "$CK" --dry-run
[ "$(grep -vc '^chex-dicomweb:' "$tmp/out")" = 3 ] && grep -q "$(uid "$src/c_jpll.dcm" SOPInstanceUID)" "$tmp/out" &&
  grep -q "$(uid "$src/d_dx.dcm" SOPInstanceUID)" "$tmp/out" && grep -q "$(uid "$src/e_small.dcm" SOPInstanceUID)" "$tmp/out" ||
  fail "--since 2000-01-01 --dry-run: $(cat "$tmp/out")"
echo "dicomweb: --since 2000-01-01 --dry-run lists the 3 images dated 2004 and 2024 (not the undated or 1901 ones)"
kill -STOP "$chexd_pid"
"$TOOL" --dicomweb "http://127.0.0.1:$PACS_PORT/dicom-web" --pacs-user pacs --pacs-password-file "$tmp/pacs-password" \
  --url "https://localhost:$CHEXD_PORT" --cacert "$CA" --token-file "$tmp/secrets/token" --jobs 1 \
  --attempts 200 --backoff 0.2 --max-backoff 1 --timeout 120 --modality DX,CR --since 20000101 --checkpoint "$CK" \
  --threshold 0 \
  >"$tmp/run1.out" 2>"$tmp/run1.err" &
tool_pid=$!
wait_until 60 "the tool's request reaching the frozen chexd" chexd_has_request
run_tool 3 --since 2000-01-01 --checkpoint "$CK"
grep -q "another run holds" "$tmp/tool.err" || fail "second run: $(cat "$tmp/tool.err")"
echo "dicomweb: a second run on the same checkpoint exits 3 (locked)"
kill -KILL "$chexd_pid"; wait "$chexd_pid" 2>/dev/null || true; chexd_pid=
refused() { [ "$(grep -c "chexd unreachable.*retrying" "$tmp/run1.err")" -ge 2 ]; }
wait_until 60 "the tool retrying on a dead chexd" refused
start_chexd
rc=0; wait "$tool_pid" || rc=$?; tool_pid=
[ $rc = 1 ] || fail "run 1 exited $rc (expected 1: the 48x48 image is refused): $(cat "$tmp/run1.out") $(tail "$tmp/run1.err")"
grep -q "2 classified and stored, 0 already done, 1 failed" "$tmp/run1.out" || fail "run 1: $(cat "$tmp/run1.out")"
grep -q "FAILED chexd on .*422" "$tmp/run1.err" || fail "run 1: no 422 failure: $(cat "$tmp/run1.err")"
echo "dicomweb: chexd frozen then killed mid-request: $(grep -c retrying "$tmp/run1.err") retries logged, chexd started late -> $(cat "$tmp/run1.out" | cut -c1-80)..."
[ "$(pacs_srs)" = 3 ] || fail "PACS has $(pacs_srs) SRs after run 1, expected 3 (2 new + the foreign one)"
! grep -q "refuses transfer-syntax" "$tmp/run1.err" || fail "the PACS did not send instances as stored"
run_tool 0 --since 2000-01-01 --checkpoint "$CK"
summary_has "0 classified and stored, 2 already done, 0 failed, 1 refused earlier"
[ "$(pacs_srs)" = 3 ] || fail "rerun stored something"
echo "dicomweb: rerun -> nothing new ($(cut -c1-90 "$tmp/out")...)"
# that rerun completed: --since last = the day before it started (no study that recent here)
run_tool 0 --since last --checkpoint "$CK" --dry-run
summary_has "0 stud(ies), 0 instance(s) would be classified"
"$PY" -c 'import json,sys; assert json.load(open(sys.argv[1]))["last_complete_run"]["started"]' "$CK" ||
  fail "no last_complete_run in the checkpoint"
run_tool 2 --since last --checkpoint "$tmp/ck-none.json"
grep -q "no completed run recorded" "$tmp/tool.err" || fail "--since last without a previous run: $(cat "$tmp/tool.err")"
echo "dicomweb: --since last after a complete run: nothing that recent; without a previous run: exit 2"

# ---- 2. STOW fails: the SR made is kept and stored by the next run, not made again --------
run_tool 3 --study "$study_a" --checkpoint "$CK" --attempts 2 --stow-url "http://127.0.0.1:$CLOSED_PORT/dicom-web"
summary_has "0 classified and stored.*1 left for the next run"
pending=$("$PY" -c 'import json,sys; p = json.load(open(sys.argv[1]))["pending"]; assert len(p) == 1, p; print(list(p.values())[0]["sr"])' "$CK")
[ -e "$CK.sr/$pending.dcm" ] || fail "pending SR not kept in $CK.sr/"
run_tool 0 --study "$study_a" --checkpoint "$CK"
summary_has "0 classified and stored, 1 SR(s) of an earlier run stored, 0 already done"
orth "$PACS_PORT" POST /tools/lookup --data-binary "$pending" | grep -q '"Instance"' ||
  fail "the PACS does not hold the pending SR $pending"
[ ! -e "$CK.sr/$pending.dcm" ] || fail "stored SR still in the spool"
echo "dicomweb: STOW refused -> exit 3, SR $pending kept; next run stored that same SR, classified nothing"
# a crash after the STOW but before the checkpoint said "done": the SR is pending again
# (its bytes as the PACS holds them); the rerun sends the same SOP Instance UID once more
# and the PACS still holds one such SR
sr_id=$(orth "$PACS_PORT" POST /tools/lookup --data-binary "$pending" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)[0]["ID"])')
orth "$PACS_PORT" GET "/instances/$sr_id/file" -o "$CK.sr/$pending.dcm"
"$PY" - "$CK" "$pending" <<'PY'
import json, sys
ck = json.load(open(sys.argv[1]))
sop, rec = next((k, v) for k, v in ck["done"].items() if v["sr"] == sys.argv[2])
del ck["done"][sop]
ck["pending"][sop] = {"study": rec["study"], "series": "", "sr": rec["sr"], "at": rec["at"]}
json.dump(ck, open(sys.argv[1], "w"))
PY
srs_before=$(pacs_srs)
run_tool 0 --study "$study_a" --checkpoint "$CK"
summary_has "0 classified and stored, 1 SR(s) of an earlier run stored, 0 already done"
[ "$(pacs_srs)" = "$srs_before" ] || fail "re-sending a stored SR made a second one"
[ "$(orth "$PACS_PORT" POST /tools/lookup --data-binary "$pending" | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 1 ] ||
  fail "SR $pending twice in the PACS"
echo "dicomweb: crash between STOW and checkpoint (SR pending again): the rerun re-sends the same SR, the PACS keeps one"

# ---- 3. --stow-url: another server; then B into the PACS too -------------------------------
run_tool 0 --study "$study_b" --checkpoint "$tmp/ck-archive.json" \
  --stow-url "http://127.0.0.1:$ARCHIVE_PORT/dicom-web/studies"
summary_has "1 classified and stored"
[ "$(orth "$ARCHIVE_PORT" GET /instances | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 1 ] ||
  fail "archive does not hold exactly the SR"
[ "$(pacs_srs)" = 4 ] || fail "--stow-url stored into the PACS"
echo "dicomweb: --stow-url: the SR of the SIIM CR went to the archive Orthanc, not the PACS"
run_tool 0 --study "$study_b,$study_e" --checkpoint "$CK"
summary_has "1 classified and stored, 0 already done, 0 failed, 1 refused earlier"

# ---- 3b. chexd busy: 503 with Retry-After is honoured ------------------------------------
# A gate in front of chexd answers the first two requests as a full chexd does (503
# queue_full, Retry-After: 1), then passes requests on to the real chexd.
"$PY" - "$GATE_PORT" "$CHEXD_PORT" "$CA" >"$tmp/gate.log" 2>&1 <<'PY' &
import http.server, json, ssl, sys, urllib.request
port, chexd, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
busy = [2]
class Gate(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if busy[0] > 0:
            busy[0] -= 1
            out = json.dumps({"error": {"code": "queue_full", "message": "64 requests already wait"}}).encode()
            self.send_response(503)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        req = urllib.request.Request("https://localhost:%s%s" % (chexd, self.path), data=body, method="POST",
                                     headers={k: self.headers[k] for k in ("Content-Type", "Accept", "Authorization")})
        with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=ca)) as r:
            out, ctype = r.read(), r.headers["Content-Type"]
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
http.server.HTTPServer(("127.0.0.1", port), Gate).serve_forever()
PY
gate_pid=$!
wait_until 30 "the gate listening" curl -s -o /dev/null "http://127.0.0.1:$GATE_PORT/"
run_tool 0 --study "$study_a" --checkpoint "$tmp/ck-gate.json" --url "http://127.0.0.1:$GATE_PORT" \
  --stow-url "http://127.0.0.1:$ARCHIVE_PORT/dicom-web"
summary_has "1 classified and stored"
[ "$(grep -c 'chexd answered 503: queue_full: 64 requests already wait; retrying in 1.0 s' "$tmp/tool.err")" = 2 ] ||
  fail "503 Retry-After not honoured (backoff is 0.2 s): $(cat "$tmp/tool.err")"
kill "$gate_pid"; wait "$gate_pid" 2>/dev/null || true; gate_pid=
echo "dicomweb: chexd busy twice (503, Retry-After: 1) -> waited 1.0 s each time (not the 0.2 s backoff), then stored"

# ---- 4. everything: nothing new; SRs never classified; results = chexd's JSON --------------
RUNNER=python3
run_tool 0 --all --checkpoint "$CK"
summary_has "0 classified and stored, 4 already done, 0 failed, 1 refused earlier (not retried), 0 left"
summary_has "skipped 6 series"
run_tool 0 --all --checkpoint "$tmp/ck-fresh.json" --dry-run
[ "$(grep -vc '^chex-dicomweb:' "$tmp/out")" = 5 ] || fail "fresh --all --dry-run: $(cat "$tmp/out")"
for f in "$src"/[a-e]_*.dcm; do grep -q "$(uid "$f" SOPInstanceUID)" "$tmp/out" || fail "$f not listed"; done
run_tool 0 --all --checkpoint "$tmp/ck-fresh.json" --dry-run --limit 2
[ "$(grep -vc '^chex-dicomweb:' "$tmp/out")" = 2 ] || fail "--limit 2 --dry-run: $(cat "$tmp/out")"
summary_has "3 over --limit"
RUNNER=
echo "dicomweb: --all ($(python3 --version)): 4 done, 1 refused earlier, 6 series skipped (4 chexd SRs, OT, foreign SR); a fresh checkpoint lists the 5 images only"

for f in a_cr b_siim c_jpll d_dx; do
  curl -fsS --cacert "$CA" -H "Authorization: Bearer $(cat "$tmp/secrets/token")" -H 'Content-Type: application/dicom' \
    --data-binary "@$src/$f.dcm" "https://localhost:$CHEXD_PORT/v1/predict" >"$tmp/$f.json" || fail "chexd JSON for $f"
done
mkdir -p "$tmp/fromPacs"
for id in $(orth "$PACS_PORT" GET /instances | "$PY" -c 'import json,sys; print(" ".join(json.load(sys.stdin)))'); do
  orth "$PACS_PORT" GET "/instances/$id/file" -o "$tmp/fromPacs/$id.dcm"
  orth "$PACS_PORT" GET "/instances/$id/study" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["ID"])' >"$tmp/fromPacs/$id.study"
done
"$PY" - "$tmp/fromPacs" "$src" "$tmp" <<'PY' || fail "SRs in the PACS"
import glob, json, os, sys
import pydicom
pacs, src, tmp = sys.argv[1:4]
objs = {}
for f in glob.glob(pacs + "/*.dcm"):
    ds = pydicom.dcmread(f)
    objs[ds.SOPInstanceUID] = (ds, open(f[:-4] + ".study").read().strip())
srs = [(ds, st) for ds, st in objs.values() if ds.Modality == "SR" and ds.Manufacturer == "chexd"]
refs = {}
for ds, st in srs:
    ev = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    refs.setdefault(ev.ReferencedSOPInstanceUID, []).append((ds, st))
assert len(srs) == 4, len(srs)
for name in ("a_cr", "b_siim", "c_jpll", "d_dx"):
    s = pydicom.dcmread(os.path.join(src, name + ".dcm"), stop_before_pixels=True)
    got = refs.get(s.SOPInstanceUID, [])
    assert len(got) == 1, (name, "has %d SRs" % len(got))
    sr, sr_study = got[0]
    assert sr.StudyInstanceUID == s.StudyInstanceUID, name
    assert sr_study == objs[s.SOPInstanceUID][1], (name, "SR in another Orthanc study")
    nums, findings = {}, 0
    for it in sr.ContentSequence:
        if it.ValueType == "NUM":
            nums[it.ConceptNameCodeSequence[0].CodeMeaning] = float(it.MeasuredValueSequence[0].NumericValue)
        findings += it.ValueType == "CODE"
    # run 1 (C, D) asked for --threshold 0: every label is a finding; the others no threshold
    assert findings == (14 if name in ("c_jpll", "d_dx") else 0), (name, findings)
    want = {p["label"]: p["probability"] for p in json.load(open(os.path.join(tmp, name + ".json")))["predictions"]}
    assert nums.keys() == want.keys() and len(want) == 14, (name, sorted(nums), sorted(want))
    worst = max(abs(nums[k] - want[k]) for k in want)
    assert worst <= 1e-6 + 1e-12, (name, worst)
    print("  %s: 1 SR in its study, 14 NUM values = chexd JSON (max diff %.1e), %d findings" % (name, worst, findings))
images = {pydicom.dcmread(os.path.join(src, n + ".dcm"), stop_before_pixels=True).SOPInstanceUID
          for n in ("a_cr", "b_siim", "c_jpll", "d_dx")}
assert set(refs) == images, "an SR references a non-image or a refused image"
PY

# ---- 5. configuration errors stop the run: exit 2 -----------------------------------------
rc=0
"$TOOL" --dicomweb "http://127.0.0.1:$PACS_PORT/dicom-web" --pacs-user pacs --pacs-password-file "$tmp/bad-password" \
  --url "https://localhost:$CHEXD_PORT" --cacert "$CA" --token-file "$tmp/secrets/token" --all \
  --checkpoint "$tmp/ck-bad.json" >"$tmp/out" 2>"$tmp/tool.err" || rc=$?
[ $rc = 2 ] && grep -q "answered 401" "$tmp/tool.err" || fail "wrong PACS password: exit $rc, $(cat "$tmp/tool.err")"
run_tool 2 --all --checkpoint "$tmp/ck-bad.json" --token-file "$tmp/bad-token"
grep -q "chexd answered 401" "$tmp/tool.err" || fail "wrong chexd token: $(cat "$tmp/tool.err")"
[ ! -e "$tmp/ck-bad.json" ] || fail "a configuration error left a checkpoint: $(cat "$tmp/ck-bad.json")"
echo "dicomweb: wrong PACS password -> exit 2 (401); wrong chexd token -> exit 2, nothing recorded"
echo "dicomweb: ok"
