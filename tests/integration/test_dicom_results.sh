#!/usr/bin/env bash
# DICOM results (report/): bin/chex classify --sr / --cam top --sc on every
# DICOM radiograph of tests/data (uncompressed and JPEG Baseline; compressed
# variants too once chexd reads them) plus sources made here with pydicom that
# lack the Type 2 and optional attributes, have them empty, or carry UTF-8
# names. Every SR and SC must pass dicom3tools' dciodvfy with no Error line,
# be read by pydicom and (SR) by dcmtk's dsrdump; the SR's NUM values must
# equal the JSON answer's probabilities, its findings the "positive" labels,
# and both objects must sit in the source's study with its patient/study
# attributes (present but empty where the source lacks them). Also: PNG input
# -> not_dicom, uid_root honoured and validated.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for t in dciodvfy dsrdump; do
  command -v $t >/dev/null || fail "$t not installed (deploy/packages/test.txt)"
done

src=$TMPD/src
out=$TMPD/out
mkdir -p "$src" "$out"
"$PY" - "$DATA/cr-mono1-10-chest.dcm" "$src" <<'PY' || fail "making the sources"
import sys, pydicom
base, d = sys.argv[1], sys.argv[2]
type2 = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
         "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"]
optional = ["ViewPosition", "InstitutionName", "SeriesNumber", "InstanceNumber", "BodyPartExamined",
            "SeriesDate", "ContentDate", "AcquisitionDate", "SpecificCharacterSet"]
ds = pydicom.dcmread(base)
for k in type2 + optional:
    if k in ds:
        delattr(ds, k)
ds.save_as(d + "/lacking.dcm", write_like_original=False)
ds = pydicom.dcmread(base)
for k in type2:
    setattr(ds, k, "")
ds.save_as(d + "/empty_type2.dcm", write_like_original=False)
ds = pydicom.dcmread(base)
ds.SpecificCharacterSet = "ISO_IR 192"
ds.PatientName = "Müller^Jürgen"
ds.ReferringPhysicianName = "Ærø^Åse"
ds.PatientID = "ID-Ø-1"
ds.PatientSex = "M"
ds.PatientBirthDate = "19700101"
ds.StudyID = "S1"
ds.AccessionNumber = "ACC123"
ds.save_as(d + "/utf8.dcm", write_like_original=False)
PY
cp "$DATA"/*.dcm "$src/"
sources=("$src"/*.dcm "$DATA"/dicom/*.dcm)

rc=0
"$CHEX" classify --model "$DEMO" --min-image-side 16 --threshold 0.5 --sr "$out" \
  --cam top --cam-out "$out" --sc "$out" "${sources[@]}" >"$TMPD/answers.jsonl" || rc=$?
[ "$rc" = 0 ] || [ "$rc" = 1 ] || fail "classify exit $rc"

# every object written passes dciodvfy without an Error line; every SR dsrdump
nsr=0; nsc=0
for f in "$out"/*.dcm; do
  dciodvfy "$f" >"$TMPD/v.txt" 2>&1 || true
  if grep -q '^Error' "$TMPD/v.txt"; then
    fail "dciodvfy $(basename "$f"): $(grep '^Error' "$TMPD/v.txt" | sort | uniq -c)"
  fi
  case $f in
    *.sr.dcm)
      dsrdump "$f" >"$TMPD/dump.txt" 2>&1 || fail "dsrdump $(basename "$f"): $(cat "$TMPD/dump.txt")"
      grep -q 'Diagnostic imaging report' "$TMPD/dump.txt" || fail "dsrdump: no title in $(basename "$f")"
      grep -q 'contains NUM' "$TMPD/dump.txt" || fail "dsrdump: no NUM in $(basename "$f")"
      nsr=$((nsr + 1)) ;;
    *.sc-*.dcm) nsc=$((nsc + 1)) ;;
  esac
done
[ "$nsr" -ge 25 ] && [ "$nsr" = "$nsc" ] || fail "wanted >= 25 SR and as many SC, got $nsr SR, $nsc SC"
ok "dciodvfy: no Error on $nsr SR and $nsc SC; dsrdump reads every SR"

"$PY" - "$TMPD/answers.jsonl" "$DATA/dicom/MANIFEST" <<'PY' || fail "SR/SC content"
import json, os, sys
import numpy as np
import pydicom
from PIL import Image

answers = [json.loads(l) for l in open(sys.argv[1])]
expected_ok = {l.split()[0] for l in open(sys.argv[2]) if l.split()[1:2] == ["ok"]}
ATTRS = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
         "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"]
checked = set()
series = set()

def code(item):
    return (item.CodeValue if "CodeValue" in item else item.LongCodeValue,
            item.CodingSchemeDesignator, item.CodeMeaning)

def same_study(obj, src, name):
    for k in ATTRS:
        assert k in obj, (name, k, "missing (Type 2 must be present)")
        want = str(src.get(k, "") or "")
        assert str(obj.get(k) or "") == want, (name, k)
    assert obj.SeriesInstanceUID != src.SeriesInstanceUID, name
    assert obj.SOPInstanceUID != src.SOPInstanceUID, name
    assert obj.SeriesInstanceUID not in series, (name, "series reused")
    series.add(obj.SeriesInstanceUID)
    for uid in (obj.SeriesInstanceUID, obj.SOPInstanceUID):
        assert uid.startswith("2.25.") and len(uid) <= 64, uid

for a in answers:
    name = os.path.basename(a["file"])
    stem = name[:-4]
    if "error" in a:
        assert stem not in expected_ok, (name, a["error"])
        continue
    src = pydicom.dcmread(a["file"])
    probs = {p["label"]: p["probability"] for p in a["predictions"]}
    positive = {p["label"] for p in a["predictions"] if p["positive"]}

    sr = pydicom.dcmread(a["sr"])
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33" and sr.Modality == "SR", name
    same_study(sr, src, name)
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    assert sr.ContentDate and sr.ContentTime and sr.InstanceNumber is not None
    ev = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert ev.StudyInstanceUID == src.StudyInstanceUID
    ser = ev.ReferencedSeriesSequence[0]
    assert ser.SeriesInstanceUID == src.SeriesInstanceUID
    ref = ser.ReferencedSOPSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == \
        (src.SOPClassUID, src.SOPInstanceUID)
    eq = sr.ContributingEquipmentSequence[0]
    assert code(eq.PurposeOfReferenceCodeSequence[0]) == \
        ("Newcode1", "99IHE", "Processing Algorithm")
    assert eq.ManufacturerModelName == a["model"]["name"]
    assert a["model"]["sha256"] in list(eq.SoftwareVersions), eq.SoftwareVersions
    assert code(sr.ConceptNameCodeSequence[0]) == ("18748-4", "LN", "Diagnostic imaging report")
    nums, findings, texts, images = {}, set(), [], []
    for it in sr.ContentSequence:
        assert it.RelationshipType == "CONTAINS"
        if it.ValueType == "NUM":
            cn = code(it.ConceptNameCodeSequence[0])
            assert cn[1] == "99CHEXD", cn
            mv = it.MeasuredValueSequence[0]
            assert code(mv.MeasurementUnitsCodeSequence[0]) == ("1", "UCUM", "no units")
            assert len(str(mv.NumericValue).split(".")[1]) == 6, mv.NumericValue
            nums[cn[2]] = float(mv.NumericValue)
        elif it.ValueType == "CODE":
            assert code(it.ConceptNameCodeSequence[0]) == ("121071", "DCM", "Finding")
            c = code(it.ConceptCodeSequence[0])
            assert c[1] == "99CHEXD"
            findings.add(c[2])
        elif it.ValueType == "TEXT":
            texts.append((code(it.ConceptNameCodeSequence[0])[2], it.TextValue))
        elif it.ValueType == "IMAGE":
            r = it.ReferencedSOPSequence[0]
            images.append((r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID))
    assert set(nums) == set(probs), (name, set(nums) ^ set(probs))
    for k, v in probs.items():
        assert abs(nums[k] - v) <= 1e-6, (name, k, nums[k], v)
    assert findings == positive, (name, findings, positive)
    assert images == [(src.SOPClassUID, src.SOPInstanceUID)], images
    assert ("Algorithm Name", a["model"]["name"]) in texts, texts
    if a["model"]["demo"]:
        assert ("Comment", a["warning"]) in texts, texts

    sc = pydicom.dcmread(a["sc"])
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and sc.ConversionType == "WSD"
    assert sc.PhotometricInterpretation == "RGB" and sc.SamplesPerPixel == 3
    same_study(sc, src, name)
    assert (sc.Columns, sc.Rows) == (a["input"]["width"], a["input"]["height"]), name
    px = sc.pixel_array
    overlay = np.asarray(Image.open(a["cam"]["overlay"]).convert("RGB"))
    h = px.shape[0] * 3 // 5  # the text band stays above (26 rows on a 48-row image)
    assert np.array_equal(px[h:], overlay[h:]), (name, "overlay pixels differ")
    assert not np.array_equal(px[:4], overlay[:4]), (name, "no text band")
    assert a["cam"]["label"] in sc.DerivationDescription
    if a["model"]["demo"]:
        assert "not a diagnosis" in sc.DerivationDescription
    checked.add(stem)

missing = expected_ok - checked
assert not missing, ("readable variants without SR/SC", missing)
for s in ("lacking", "empty_type2", "utf8", "cr-mono1-10-chest", "siim-pneumothorax-sample"):
    assert s in checked, s
u = pydicom.dcmread([a["sr"] for a in answers if a.get("file", "").endswith("/utf8.dcm")][0])
assert str(u.PatientName) == "Müller^Jürgen" and u.SpecificCharacterSet == "ISO_IR 192"
print("checked", len(checked), "sources")
PY
ok "pydicom: SR (NUM = JSON probabilities, findings = positive labels, evidence, IHE AIR equipment) and SC (RGB overlay + text band) in the source's study"

rc=0
"$CHEX" classify --model "$DEMO" --sr "$out" "$DATA/00000001_000.png" >"$TMPD/png.json" || rc=$?
[ "$rc" = 1 ] || fail "PNG with --sr: exit $rc"
"$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["error"]["code"] == "not_dicom" and "not DICOM" in j["error"]["message"], j' \
  "$TMPD/png.json" || fail "PNG with --sr: $(cat "$TMPD/png.json")"
ok "PNG input with --sr: not_dicom error"

mkdir -p "$TMPD/uidroot"
"$CHEX" classify --model "$DEMO" --uid-root 1.2.826.0.1.3680043.10.543 --sr "$TMPD/uidroot" \
  "$DATA/cr-mono1-10-chest.dcm" >/dev/null || fail "classify with uid_root"
"$PY" - "$TMPD/uidroot/cr-mono1-10-chest.sr.dcm" <<'PY' || fail "uid_root not used"
import sys, pydicom
d = pydicom.dcmread(sys.argv[1])
for uid in (d.SOPInstanceUID, d.SeriesInstanceUID, d.file_meta.MediaStorageSOPInstanceUID):
    assert uid.startswith("1.2.826.0.1.3680043.10.543.") and len(uid) <= 64, uid
assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
assert d.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
PY
rc=0
"$CHEX" classify --model "$DEMO" --uid-root 1.2.x --sr "$TMPD/uidroot" "$DATA/cr-mono1-10-chest.dcm" \
  >/dev/null 2>"$TMPD/err.txt" || rc=$?
[ "$rc" = 2 ] && grep -q 'uid_root' "$TMPD/err.txt" || fail "bad uid_root: exit $rc, $(cat "$TMPD/err.txt")"
rc=0
"$CHEX" classify --model "$DEMO" --sc "$TMPD/uidroot" "$DATA/cr-mono1-10-chest.dcm" >/dev/null 2>"$TMPD/err.txt" || rc=$?
[ "$rc" = 2 ] && grep -q -- '--cam' "$TMPD/err.txt" || fail "--sc without --cam: exit $rc"
ok "uid_root: UIDs under the configured root; an invalid root and --sc without --cam are usage errors"
