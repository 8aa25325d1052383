#!/usr/bin/env bash
# Content negotiation for DICOM results on the real daemon:
#   POST /v1/predict, Accept: application/dicom, DICOM body -> the SR (application/dicom)
#   ... a PNG/JPEG body -> 406 not_acceptable (no study to attach to)
#   POST /v1/explain?label=..., Accept: application/dicom -> the SC
#   multipart with several DICOM parts -> multipart/related; type="application/dicom"
# Each object passes dciodvfy without Error; the SR's NUM values equal the JSON
# answer's probabilities for the same input; the SC equals bin/chex's overlay.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
command -v dciodvfy >/dev/null || fail "dciodvfy not installed (deploy/packages/test.txt)"
start_daemon dicomaccept --min-image-side 16 --uid-root 1.2.826.0.1.3680043.10.543
cr=$DATA/cr-mono1-10-chest.dcm
jpg=$DATA/siim-pneumothorax-sample.dcm

post() { # OUT HEADERS_OUT curl-args...
  local out=$1 hdr=$2; shift 2
  curl -s -o "$out" -D "$hdr" -w '%{http_code}' "$@"
}
code=$(post "$TMPD/sr.dcm" "$TMPD/sr.h" -H 'Accept: application/dicom' \
  -H 'Content-Type: application/dicom' --data-binary @"$cr" "$URL/v1/predict?threshold=0.5")
[ "$code" = 200 ] || fail "predict SR: $code $(head -c 300 "$TMPD/sr.dcm")"
grep -qi '^Content-Type: application/dicom' "$TMPD/sr.h" || fail "SR content type: $(cat "$TMPD/sr.h")"
curl -s -H 'Content-Type: application/dicom' --data-binary @"$cr" "$URL/v1/predict?threshold=0.5" \
  >"$TMPD/sr.json"
code=$(post "$TMPD/sc.dcm" "$TMPD/sc.h" -H 'Accept: application/dicom, application/json;q=0.5' \
  -F image=@"$jpg" "$URL/v1/explain?label=Effusion")
[ "$code" = 200 ] || fail "explain SC: $code $(head -c 300 "$TMPD/sc.dcm")"
grep -qi '^Content-Type: application/dicom' "$TMPD/sc.h" || fail "SC content type"
grep -qi '^X-Chexd-Label: Effusion' "$TMPD/sc.h" || fail "SC label header"
curl -s -H 'Content-Type: application/dicom' --data-binary @"$jpg" "$URL/v1/predict" >"$TMPD/sc.json"
code=$(post "$TMPD/overlay.png" "$TMPD/o.h" -F image=@"$jpg" "$URL/v1/explain?label=Effusion")
[ "$code" = 200 ] || fail "explain PNG: $code"
code=$(post "$TMPD/multi.bin" "$TMPD/multi.h" -H 'Accept: application/dicom' \
  -F a=@"$cr" -F b=@"$jpg" -F c=@"$DATA/dicom/cr_implicit.dcm" "$URL/v1/predict")
[ "$code" = 200 ] || fail "multipart SR: $code $(head -c 300 "$TMPD/multi.bin")"
curl -s -F a=@"$cr" -F b=@"$jpg" -F c=@"$DATA/dicom/cr_implicit.dcm" "$URL/v1/predict" >"$TMPD/multi.json"

"$PY" - "$TMPD" <<'PY' || fail "DICOM answers"
import email.parser, io, json, os, re, sys
import numpy as np
import pydicom
from PIL import Image
d = sys.argv[1]

def nums(ds):
    return {it.ConceptNameCodeSequence[0].CodeMeaning: float(it.MeasuredValueSequence[0].NumericValue)
            for it in ds.ContentSequence if it.ValueType == "NUM"}

def same(ds, answer):
    got = nums(ds)
    want = {p["label"]: p["probability"] for p in answer["predictions"]}
    assert set(got) == set(want), (got, want)
    assert all(abs(got[k] - want[k]) <= 1e-6 for k in want), (got, want)
    assert ds.StudyInstanceUID == answer["dicom"]["study_instance_uid"]
    assert ds.SOPInstanceUID.startswith("1.2.826.0.1.3680043.10.543.")

sr = pydicom.dcmread(os.path.join(d, "sr.dcm"))
assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"
same(sr, json.load(open(os.path.join(d, "sr.json"))))
found = {it.ConceptCodeSequence[0].CodeMeaning for it in sr.ContentSequence if it.ValueType == "CODE"}
assert found == {p["label"] for p in json.load(open(os.path.join(d, "sr.json")))["predictions"]
                 if p["positive"]}, found

sc = pydicom.dcmread(os.path.join(d, "sc.dcm"))
assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and sc.PhotometricInterpretation == "RGB"
assert "Effusion" in sc.DerivationDescription
scj = json.load(open(os.path.join(d, "sc.json")))
assert sc.StudyInstanceUID == scj["dicom"]["study_instance_uid"]
px, ov = sc.pixel_array, np.asarray(Image.open(os.path.join(d, "overlay.png")).convert("RGB"))
h = px.shape[0] // 2
assert px.shape == ov.shape and np.array_equal(px[h:], ov[h:]) and not np.array_equal(px[:8], ov[:8])

hdr = open(os.path.join(d, "multi.h")).read()
ct = re.search(r"(?im)^Content-Type: (.*?)\r?$", hdr).group(1)
assert ct.startswith('multipart/related; type="application/dicom"; boundary='), ct
body = open(os.path.join(d, "multi.bin"), "rb").read()
msg = email.parser.BytesParser().parsebytes(b"Content-Type: " + ct.encode() + b"\r\n\r\n" + body)
parts = msg.get_payload()
assert msg.is_multipart() and len(parts) == 3, len(parts)
answers = json.load(open(os.path.join(d, "multi.json")))
for k, (part, a) in enumerate(zip(parts, answers)):
    assert part.get_content_type() == "application/dicom"
    raw = part.get_payload(decode=True)
    open(os.path.join(d, "part%d.dcm" % k), "wb").write(raw)
    same(pydicom.dcmread(io.BytesIO(raw)), a)
print("SR, SC and a 3-part multipart/related answer checked")
PY
for f in "$TMPD"/sr.dcm "$TMPD"/sc.dcm "$TMPD"/part*.dcm; do
  dciodvfy "$f" >"$TMPD/v.txt" 2>&1 || true
  ! grep -q '^Error' "$TMPD/v.txt" || fail "dciodvfy $(basename "$f"): $(grep '^Error' "$TMPD/v.txt")"
done
ok "Accept: application/dicom: SR (NUM = JSON), SC (= the explain overlay + text), multipart/related; dciodvfy clean"

code=$(post "$TMPD/e.json" "$TMPD/e.h" -H 'Accept: application/dicom' -H 'Content-Type: image/png' \
  --data-binary @"$DATA/00000001_000.png" "$URL/v1/predict")
[ "$code" = 406 ] || fail "PNG with Accept dicom: $code"
[ "$(json_get "$TMPD/e.json" 'j["error"]["code"]')" = not_acceptable ] || fail "406 code: $(cat "$TMPD/e.json")"
grep -q 'no DICOM study' "$TMPD/e.json" || fail "406 message: $(cat "$TMPD/e.json")"
code=$(post "$TMPD/e2.json" "$TMPD/e2.h" -H 'Accept: application/dicom' \
  -F a=@"$cr" -F b=@"$DATA/16747_3_1.jpg" "$URL/v1/predict")
[ "$code" = 406 ] && grep -q 'part 2' "$TMPD/e2.json" || fail "multipart with a JPEG part: $code $(cat "$TMPD/e2.json")"
code=$(post "$TMPD/e3.json" "$TMPD/e3.h" -H 'Accept: application/dicom;q=0, application/json' \
  -H 'Content-Type: image/png' --data-binary @"$DATA/00000001_000.png" "$URL/v1/predict")
[ "$code" = 200 ] && grep -qi '^Content-Type: application/json' "$TMPD/e3.h" || fail "q=0: $code"
ok "PNG/JPEG with Accept: application/dicom -> 406 not_acceptable; q=0 keeps JSON"
stop_daemon "$PID" || fail "chexd exit status"
