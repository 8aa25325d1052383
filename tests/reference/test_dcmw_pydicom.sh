#!/usr/bin/env bash
# The DICOM writer (report/dcmw.h) against an independent reader: random data
# sets (every string and binary VR the writer knows, empty values,
# multi-valued strings, nested sequences with empty and several items, written
# by tests/reference/dcmw_random_driver.c) read back by pydicom element by
# element: same tags in ascending order, same VRs, same values (padding
# removed), even lengths, and the file meta group (group length, transfer
# syntax, SOP UIDs). chexd's own parser reads such data sets back in
# tests/unit/test_dcmw.c.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
make -s BUILD="$BUILD" BIN="${BIN:-bin}" "$BUILD/libchex_report.a"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
${CC:-cc} -O1 -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -I. tests/reference/dcmw_random_driver.c \
  "$BUILD/libchex_report.a" -ljansson -o "$work/driver"
"$work/driver" "$work" 200 20261202
"$PY" - "$work" 200 <<'PY'
import json, struct, sys, warnings
import pydicom
from pydicom.multival import MultiValue

d, n = sys.argv[1], int(sys.argv[2])
# pydicom 2.3 counts the last value's padding space against SH/CS/... maxima
# (a 16-character last value of an odd-length multi-valued SH warns);
# tests/unit/test_dcmw.c checks the lengths per value, without the padding.
warnings.filterwarnings("ignore", message="The value length")

def text_of(v):
    if v is None:
        return ""
    if isinstance(v, MultiValue):
        return "\\".join(str(x) for x in v)
    return str(v)

FMT = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i", "FL": "<f", "FD": "<d"}

def check(ds, elements, where):
    want = {}
    for e in elements:
        want[e["tag"]] = e
    tags = [int(el.tag) for el in ds]
    assert tags == sorted(want), (where, "tags", tags, sorted(want))
    for el in ds:
        e = want[int(el.tag)]
        w = "%s %s" % (where, el.tag)
        assert el.VR == e["vr"], (w, el.VR, e["vr"])
        if e["vr"] == "SQ":
            assert len(el.value) == len(e["items"]), w
            for k, (item, sub) in enumerate(zip(el.value, e["items"])):
                check(item, sub, "%s[%d]" % (w, k))
        elif "value" in e:
            assert text_of(el.value) == e["value"], (w, text_of(el.value), e["value"])
        else:
            raw = bytes.fromhex(e["hex"])
            if e["vr"] in FMT:
                f = FMT[e["vr"]]
                size = struct.calcsize(f)
                vals = [struct.unpack(f, raw[i:i + size])[0] for i in range(0, len(raw), size)]
                got = el.value
                got = [] if got is None or got == b"" else list(got) if isinstance(got, (MultiValue, list, tuple)) else [got]
                assert got == vals, (w, got, vals)
            else:
                got = el.value or b""
                assert got[:len(raw)] == raw and len(got) == len(raw) + (len(raw) & 1), (w, got, raw)
                assert got[len(raw):] in (b"", b"\0"), w

total = 0
for k in range(n):
    desc = json.load(open("%s/rand_%d.json" % (d, k)))
    path = "%s/rand_%d.dcm" % (d, k)
    raw = open(path, "rb").read()
    assert raw[:128] == b"\0" * 128 and raw[128:132] == b"DICM"
    ds = pydicom.dcmread(path)
    meta = ds.file_meta
    assert meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert meta.MediaStorageSOPInstanceUID == desc["sop_instance_uid"] == ds.SOPInstanceUID
    assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert meta.FileMetaInformationVersion == b"\0\1"
    # the group length counts every meta element after it
    glen = int.from_bytes(raw[140:144], "little")
    assert raw[144 + glen:146 + glen] == b"\x08\x00", "data set does not start after the group"
    del ds[0x00080016], ds[0x00080018]
    check(ds, desc["elements"], "rand_%d" % k)
    total += len(desc["elements"])
print("pydicom read back %d random data sets (%d top-level elements) identically" % (n, total))
PY
