#!/usr/bin/env bash
# tests/deploy/test_folder_tool.sh - deploy/pacs/chex-folder on a folder shaped like a
# PACS export: a DX DICOM without extension in a subfolder (as dcmtk getscu writes
# them), a PNG, a JPEG, a JPEG Lossless CR, a truncated DICOM and a text file. Through `bin/chex classify` and
# through a running chexd (--url https://, --cacert from a test CA, bearer token): CSV rows for the four good files
# (path, SOP instance UID for the DICOM, 14 label columns equal to chex classify),
# exit 1 and the broken file listed as failed; the text file skipped; both ways give
# the same CSV; a wrong token fails every file; another CA's certificate fails every file
# (certificate verify failed); an empty folder exits 2.
#   env: BIN, MODELS, PY (as given by tests/run_all.sh)
set -euo pipefail
self=$(readlink -f "${BASH_SOURCE[0]}")
cd "$(dirname "$self")/../.."
ROOT=$PWD
BIN=${BIN:-bin}; MODELS=${MODELS:-models}; PY=${PY:-/usr/bin/python3}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
case $MODELS in /*) ;; *) MODELS=$ROOT/$MODELS ;; esac
MODEL=$MODELS/chexnet-demo.safetensors
TOOL=$ROOT/deploy/pacs/chex-folder
for f in "$BIN/chexd" "$BIN/chex" "$MODEL"; do
  [ -e "$f" ] || { echo "test_folder_tool: $f missing (run make)" >&2; exit 1; }
done

tmp=$(mktemp -d)
chexd_pid=
cleanup() {
  [ -n "$chexd_pid" ] && kill "$chexd_pid" 2>/dev/null && wait "$chexd_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "test_folder_tool: FAIL: $*" >&2; exit 1; }

export_dir=$tmp/export
mkdir -p "$export_dir/DX/1.2.3"
"$PY" tests/deploy/make_dx.py tests/data/00000001_000.png "$export_dir/DX/1.2.3/DX.1.2.826.0.1.4001"
cp tests/data/00000002_000.png "$export_dir/chest.png"
# a JPEG Lossless CR as a PACS stores it (issue 16: read without transcoding)
mkdir -p "$export_dir/CR"
cp tests/data/dicom-compressed/crmono1_jpll_sv6.dcm "$export_dir/CR/CR.jpll"
cp tests/data/16747_3_1.jpg "$export_dir/photo.jpg"
head -c 4000 "$export_dir/DX/1.2.3/DX.1.2.826.0.1.4001" >"$export_dir/broken.dcm"
echo "exported by getscu" >"$export_dir/README.txt"

check_csv() { # CSV FAILURES_FILE
  "$BIN/chex" classify --model "$MODEL" "$export_dir/DX/1.2.3/DX.1.2.826.0.1.4001" "$export_dir/chest.png" \
    "$export_dir/photo.jpg" "$export_dir/CR/CR.jpll" >"$tmp/cli.jsonl" || true
  "$PY" - "$1" "$2" "$tmp/cli.jsonl" "$export_dir/DX/1.2.3/DX.1.2.826.0.1.4001" "$export_dir/CR/CR.jpll" <<'EOF'
import csv, json, sys
import pydicom
rows = list(csv.reader(open(sys.argv[1])))
failures = open(sys.argv[2]).read().splitlines()
cli = [json.loads(l) for l in open(sys.argv[3]) if l.strip()]
uid = pydicom.dcmread(sys.argv[4]).SOPInstanceUID
uid_cr = pydicom.dcmread(sys.argv[5]).SOPInstanceUID
head, body = rows[0], rows[1:]
assert head[:2] == ["path", "sop_instance_uid"] and len(head) == 16, head
order = ["DX/1.2.3/DX.1.2.826.0.1.4001", "chest.png", "photo.jpg", "CR/CR.jpll"]
body = sorted(body, key=lambda r: order.index(r[0]) if r[0] in order else 99)
assert [r[0] for r in body] == order, body
assert body[0][1] == uid and body[1][1] == "" and body[2][1] == "" and body[3][1] == uid_cr, body
for row, ans in zip(body, cli):
    want = {p["label"]: p["probability"] for p in ans["predictions"]}
    got = dict(zip(head[2:], map(float, row[2:])))
    assert got.keys() == want.keys(), (sorted(got), sorted(want))
    worst = max(abs(got[k] - want[k]) for k in got)
    assert worst <= 1e-6, f"{row[0]}: CSV differs from chex classify by {worst}"
assert len(failures) == 1 and failures[0].startswith("broken.dcm\t"), failures
print(f"  4 rows (DICOM with SOP UID, PNG, JPEG, JPEG Lossless DICOM), 14 label columns = chex classify; failed: {failures[0][:100]}")
EOF
}

# ---- through bin/chex -------------------------------------------------------------------
rc=0
"$TOOL" --chex "$BIN/chex" --model "$MODEL" -o "$tmp/chex.csv" --failures "$tmp/chex.fail" \
  "$export_dir" 2>"$tmp/chex.err" || rc=$?
[ $rc -eq 1 ] || { cat "$tmp/chex.err" >&2; fail "exit $rc with a broken file, expected 1"; }
grep -q "FAILED broken.dcm" "$tmp/chex.err" || fail "broken file not listed on stderr"
grep -q "1 other file(s) skipped" "$tmp/chex.err" || fail "README.txt not reported as skipped"
echo "folder tool via chex classify: exit 1"
check_csv "$tmp/chex.csv" "$tmp/chex.fail"

# ---- through a running chexd ------------------------------------------------------------
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
bash deploy/make-secrets.sh "$tmp/secrets" localhost 127.0.0.1 >/dev/null
bash deploy/make-secrets.sh "$tmp/other" localhost 127.0.0.1 >/dev/null
cp "$tmp/secrets/token" "$tmp/token"
"$BIN/chexd" --listen 127.0.0.1 --port "$port" --model "$MODEL" --api-token-file "$tmp/token" \
  --tls-cert-file "$tmp/secrets/chexd.crt" --tls-key-file "$tmp/secrets/chexd.key" >"$tmp/chexd.log" 2>&1 &
chexd_pid=$!
for _ in $(seq 1 240); do
  [ "$(curl -s --cacert "$tmp/secrets/ca.pem" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port/readyz")" = 200 ] && break
  kill -0 "$chexd_pid" 2>/dev/null || { cat "$tmp/chexd.log" >&2; fail "chexd exited at start"; }
  sleep 0.25
done
[ "$(curl -s --cacert "$tmp/secrets/ca.pem" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port/readyz")" = 200 ] ||
  { cat "$tmp/chexd.log" >&2; fail "chexd not ready after 60 s"; }
rc=0
"$TOOL" --url "https://localhost:$port" --cacert "$tmp/secrets/ca.pem" --token-file "$tmp/token" --jobs 2 -o "$tmp/daemon.csv" \
  --failures "$tmp/daemon.fail" "$export_dir" 2>"$tmp/daemon.err" || rc=$?
[ $rc -eq 1 ] || { cat "$tmp/daemon.err" >&2; fail "--url: exit $rc with a broken file, expected 1"; }
echo "folder tool via chexd (--url https://, --cacert, bearer token): exit 1"
check_csv "$tmp/daemon.csv" "$tmp/daemon.fail"
cmp -s "$tmp/chex.csv" "$tmp/daemon.csv" || fail "CSV through chexd differs from CSV through chex"
echo "  same CSV both ways"

echo wrong-token >"$tmp/bad-token"
rc=0
"$TOOL" --url "https://127.0.0.1:$port/v1/predict" --cacert "$tmp/secrets/ca.pem" --token-file "$tmp/bad-token" -o "$tmp/bad.csv" \
  --failures "$tmp/bad.fail" "$export_dir" 2>/dev/null || rc=$?
[ $rc -eq 1 ] && [ "$(wc -l <"$tmp/bad.fail")" -eq 5 ] && grep -q '401' "$tmp/bad.fail" ||
  fail "wrong token: exit $rc, failures: $(cat "$tmp/bad.fail")"
echo "wrong token: exit 1, all 5 files failed with 401"
rc=0
"$TOOL" --url "https://127.0.0.1:$port" --cacert "$tmp/other/ca.pem" --token-file "$tmp/token" -o "$tmp/ca.csv" \
  --failures "$tmp/ca.fail" "$export_dir" 2>/dev/null || rc=$?
[ $rc -eq 1 ] && [ "$(wc -l <"$tmp/ca.fail")" -eq 5 ] && grep -q 'CERTIFICATE_VERIFY_FAILED' "$tmp/ca.fail" ||
  fail "wrong CA: exit $rc, failures: $(cat "$tmp/ca.fail")"
echo "another CA's --cacert: exit 1, all 5 files failed (certificate verify failed)"
kill -TERM "$chexd_pid"; wait "$chexd_pid" || true; chexd_pid=

mkdir "$tmp/empty"
rc=0
"$TOOL" --chex "$BIN/chex" "$tmp/empty" 2>/dev/null || rc=$?
[ $rc -eq 2 ] || fail "empty folder: exit $rc, expected 2"
echo "empty folder: exit 2"
echo "folder tool: ok"
