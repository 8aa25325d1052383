#!/usr/bin/python3
"""Makes DICOM test variants from the real files in tests/data, and the expected
[0,1] image of each, computed here with numpy straight from PS3.3 (independently
of preprocessing/dicom.c).

    make_dicom_variants.py OUTDIR [--full]

Default: small crops (what tests/data/dicom/ holds, used by tests/unit/test_dicom.c).
--full: whole images (used by tests/reference/test_dicom.sh).

Writes OUTDIR/NAME.dcm, for decodable variants OUTDIR/NAME.f32 (float32 little
endian, rows*cols, row-major), and OUTDIR/MANIFEST with one line per variant:
    NAME ok ROWS COLS SCALING
    NAME unsupported|malformed|unusable - - SAYS
SAYS is a word the error message must contain ("-": any).
Needs pydicom (Debian python3-pydicom), numpy and PIL.
"""
import copy
import io
import os
import struct
import sys

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_pixel_data_frame
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit

HERE = os.path.dirname(os.path.abspath(__file__))
CR = os.path.join(HERE, "cr-mono1-10-chest.dcm")
SIIM = os.path.join(HERE, "siim-pneumothorax-sample.dcm")
PATIENT = [(0x0010, 0x0010), (0x0010, 0x0020), (0x0010, 0x0030)]


# ---- reference pipeline (PS3.3 C.7.6.3, C.11.1, C.11.2.1.2) ----

def voi(x, c, w, func):
    if func == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    if func == "LINEAR_EXACT":
        y = (x - c) / w + 0.5
        return np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 1.0, y))
    lo = c - 0.5 - (w - 1) / 2
    hi = c - 0.5 + (w - 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        y = (x - (c - 0.5)) / (w - 1) + 0.5
    return np.where(x <= lo, 0.0, np.where(x > hi, 1.0, y))


def expected(stored, mono1, slope=1.0, intercept=0.0, window=None, func="LINEAR"):
    """stored: the true stored values (signed already); window: (center, width)."""
    x = stored.astype(np.float64) * slope + intercept
    if window is not None:
        y = voi(x, window[0], window[1], func)
    else:
        lo, hi = x.min(), x.max()
        y = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    if mono1:
        y = 1.0 - y
    return y.astype("<f4")


# ---- writing ----

def base_ds(src, rows, cols):
    """Copy of src without pixel data or patient attributes."""
    ds = copy.deepcopy(src)
    for t in PATIENT + [(0x7FE0, 0x0010)]:
        if t in ds:
            del ds[t]
    ds.Rows, ds.Columns = rows, cols
    return ds


def to_bytes(ds, ts):
    ds.file_meta.TransferSyntaxUID = ts
    ds.is_little_endian = True
    ds.is_implicit_VR = ts == ImplicitVRLittleEndian
    bio = io.BytesIO()
    ds.save_as(bio, write_like_original=False)
    return bio.getvalue()


def set_ts_raw(data, uid):
    """Rewrites (0002,0010) and the meta group length in encoded bytes."""
    i = data.index(b"\x02\x00\x10\x00UI")
    old = struct.unpack_from("<H", data, i + 6)[0]
    v = uid.encode() + (b"\0" if len(uid) % 2 else b"")
    out = data[:i] + b"\x02\x00\x10\x00UI" + struct.pack("<H", len(v)) + v + data[i + 8 + old:]
    g = out.index(b"\x02\x00\x00\x00UL", 132)
    glen = struct.unpack_from("<I", out, g + 8)[0] + len(v) - old
    return out[:g + 8] + struct.pack("<I", glen) + out[g + 12:]


class Out:
    def __init__(self, outdir):
        self.dir = outdir
        self.lines = []

    def add(self, name, data, expect, exp=None, scaling="-", says="-"):
        with open(os.path.join(self.dir, name + ".dcm"), "wb") as f:
            f.write(data)
        if expect == "ok":
            rows, cols = exp.shape
            exp.astype("<f4").tofile(os.path.join(self.dir, name + ".f32"))
            self.lines.append(f"{name} ok {rows} {cols} {scaling}")
        else:
            self.lines.append(f"{name} {expect} - - {says}")

    def close(self):
        with open(os.path.join(self.dir, "MANIFEST"), "w") as f:
            f.write("\n".join(self.lines) + "\n")


def set_pixels(ds, data, vr="OW"):
    ds.PixelData = data
    ds["PixelData"].VR = vr
    return ds


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    outdir = sys.argv[1]
    full = "--full" in sys.argv[2:]
    os.makedirs(outdir, exist_ok=True)
    out = Out(outdir)

    cr = pydicom.dcmread(CR)
    raw_all = np.frombuffer(cr.PixelData, "<u2").reshape(cr.Rows, cr.Columns)
    if full:
        raw = raw_all.copy()
    else:
        raw = raw_all[180:228, 150:214].copy()  # 48 x 64, lung and mediastinum
    rows, cols = raw.shape
    stored = (raw & 0x3FF).astype(np.int64)
    W = (550.0, 1024.0)

    def cr_ds():
        ds = base_ds(cr, rows, cols)
        return ds

    def native(ds, arr16):
        return set_pixels(ds, arr16.astype("<u2").tobytes())

    # as the real file: MONOCHROME1, 10 of 16 bits, window 550/1024, Explicit VR LE
    ds = native(cr_ds(), raw)
    out.add("cr_explicit", to_bytes(ds, ExplicitVRLittleEndian), "ok",
            expected(stored, True, window=W), "window")
    out.add("cr_implicit", to_bytes(ds, ImplicitVRLittleEndian), "ok",
            expected(stored, True, window=W), "window")

    # labelled Explicit VR LE, written Implicit VR LE (seen in the wild)
    out.add("cr_mislabelled_implicit",
            set_ts_raw(to_bytes(ds, ImplicitVRLittleEndian), ExplicitVRLittleEndian), "ok",
            expected(stored, True, window=W), "window")

    # unused high bits set (e.g. old overlay planes): must be masked off
    noisy = raw | (np.arange(raw.size).reshape(raw.shape) % 64 << 10).astype(np.uint16)
    ds = native(cr_ds(), noisy)
    out.add("cr_highbits", to_bytes(ds, ExplicitVRLittleEndian), "ok",
            expected(stored, True, window=W), "window")

    # signed: 10-bit two's complement with the upper 6 bits left 0 (sign-extend
    # from Bits Stored), window moved with the data
    sv = stored - 512
    ds = native(cr_ds(), (sv & 0x3FF).astype(np.uint16))
    ds.PixelRepresentation = 1
    ds.WindowCenter, ds.WindowWidth = W[0] - 512, W[1]
    out.add("cr_signed", to_bytes(ds, ImplicitVRLittleEndian), "ok",
            expected(sv, True, window=(W[0] - 512, W[1])), "window")
    assert sv.min() < 0

    # signed, sign bits extended into all 16 bits, MONOCHROME2, no window
    ds = native(cr_ds(), (sv & 0xFFFF).astype(np.uint16))
    ds.PixelRepresentation = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    del ds.WindowCenter, ds.WindowWidth
    out.add("cr_signed_minmax", to_bytes(ds, ExplicitVRLittleEndian), "ok",
            expected(sv, False), "minmax")

    # rescale slope/intercept, multi-valued window (the first pair is used)
    ds = native(cr_ds(), raw)
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "0.5", "-100.25", "US"
    ds.WindowCenter = ["174.75", "300"]
    ds.WindowWidth = ["512", "100"]
    out.add("cr_rescale", to_bytes(ds, ExplicitVRLittleEndian), "ok",
            expected(stored, True, 0.5, -100.25, (174.75, 512.0)), "window")

    # no window: the image's own min..max after rescale, then MONOCHROME1 inversion
    ds = native(cr_ds(), raw)
    del ds.WindowCenter, ds.WindowWidth
    ds.RescaleSlope, ds.RescaleIntercept = "2", "-1024"
    out.add("cr_minmax", to_bytes(ds, ImplicitVRLittleEndian), "ok",
            expected(stored, True, 2.0, -1024.0), "minmax")

    # a window of width 0 cannot be applied (PS3.3: width >= 1): min..max instead
    ds = native(cr_ds(), raw)
    ds.WindowWidth = "0"
    out.add("cr_window_zero", to_bytes(ds, ExplicitVRLittleEndian), "ok",
            expected(stored, True), "minmax")

    # MONOCHROME2 with the window
    ds = native(cr_ds(), raw)
    ds.PhotometricInterpretation = "MONOCHROME2"
    out.add("cr_mono2", to_bytes(ds, ExplicitVRLittleEndian), "ok",
            expected(stored, False, window=W), "window")

    # other VOI LUT functions (PS3.3 C.11.2.1.3.1/.2)
    for func, tag in (("LINEAR_EXACT", "window-exact"), ("SIGMOID", "window-sigmoid")):
        ds = native(cr_ds(), raw)
        ds.VOILUTFunction = func
        ds.WindowCenter, ds.WindowWidth = "480.5", "300"
        out.add("cr_" + func.lower(), to_bytes(ds, ExplicitVRLittleEndian), "ok",
                expected(stored, True, window=(480.5, 300.0), func=func), tag)

    # two frames: the first is used
    ds = native(cr_ds(), np.concatenate([raw.ravel(), (1023 - stored).astype(np.uint16).ravel()]))
    ds.NumberOfFrames = 2
    out.add("cr_multiframe", to_bytes(ds, ExplicitVRLittleEndian), "ok",
            expected(stored, True, window=W), "window")

    # undefined-length sequences (nested) and an icon image sequence whose own
    # Rows/Columns/Pixel Data must not replace the image's
    for ts, nm in ((ExplicitVRLittleEndian, "cr_sequences"), (ImplicitVRLittleEndian,
                                                              "cr_sequences_implicit")):
        ds = native(cr_ds(), raw)
        inner = Dataset()
        inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "T-D3000", "SRT", "Chest"
        deep = Dataset()
        deep.CodeValue, deep.CodeMeaning = "X", "deeper"
        seq3 = DataElement(0x00081032, "SQ", Sequence([deep]))
        seq3.is_undefined_length = True
        inner.add(seq3)
        inner.is_undefined_length_sequence_item = True
        s = DataElement(0x00082218, "SQ", Sequence([inner, Dataset()]))
        s.is_undefined_length = True
        ds.add(s)
        icon = Dataset()
        icon.SamplesPerPixel, icon.PhotometricInterpretation = 1, "MONOCHROME2"
        icon.Rows, icon.Columns, icon.BitsAllocated, icon.BitsStored = 4, 4, 8, 8
        icon.HighBit, icon.PixelRepresentation = 7, 0
        icon.PixelData = bytes(range(16))
        icon["PixelData"].VR = "OB"
        icon.is_undefined_length_sequence_item = True
        s = DataElement(0x00880200, "SQ", Sequence([icon]))
        s.is_undefined_length = True
        ds.add(s)
        out.add(nm, to_bytes(ds, ts), "ok", expected(stored, True, window=W), "window")

    # odd value lengths, and an undefined-length UN sequence holding Implicit VR items
    ds = native(cr_ds(), raw)
    ds.add_new(0x00090010, "LO", "PHLD")
    ds.add_new(0x00091001, "OB", b"QQQQ")
    b = to_bytes(ds, ExplicitVRLittleEndian)
    b = b.replace(b"\x09\x00\x10\x00LO\x04\x00PHLD", b"\x09\x00\x10\x00LO\x05\x00ODDLN", 1)
    item = (struct.pack("<HHI", 0x0008, 0x0100, 3) + b"abc" +     # odd length, implicit
            struct.pack("<HHI", 0x0040, 0xA730, 0xFFFFFFFF) +    # nested SQ, implicit
            struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) +
            struct.pack("<HHI", 0x0028, 0x0010, 2) + b"\x01\x00" +  # a nested "Rows"
            struct.pack("<HHI", 0xFFFE, 0xE00D, 0) +
            struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    un = (b"\x09\x00\x01\x10UN\0\0" + struct.pack("<I", 0xFFFFFFFF) +
          struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + item +
          struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    old = b"\x09\x00\x01\x10OB\0\0" + struct.pack("<I", 4) + b"QQQQ"
    assert old in b
    b = b.replace(old, un, 1)
    out.add("cr_oddlen_un", b, "ok", expected(stored, True, window=W), "window")

    # 8-bit native MONOCHROME2, odd size (odd Pixel Data length padded), from the
    # real JPEG-baseline CR decoded by PIL
    siim = pydicom.dcmread(SIIM)
    frame = next(generate_pixel_data_frame(siim.PixelData, 1))
    g8 = np.asarray(Image.open(io.BytesIO(frame)).convert("L"))
    g8s = g8 if full else g8[400:447, 300:363].copy()  # 47 x 63
    ds = base_ds(siim, *g8s.shape)
    ds.PixelData = g8s.tobytes()
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out.add("siim_native8", to_bytes(ds, ExplicitVRLittleEndian), "ok",
            expected(g8s.astype(np.int64), False), "minmax")
    ds.WindowCenter, ds.WindowWidth = "100", "81"
    ds.PhotometricInterpretation = "MONOCHROME1"
    out.add("siim_native8_window", to_bytes(ds, ImplicitVRLittleEndian), "ok",
            expected(g8s.astype(np.int64), True, window=(100.0, 81.0)), "window")

    # JPEG Baseline, encapsulated: the real file (full) or a re-encoded crop; one
    # frame in 3 fragments; two frames with a basic offset table
    if full:
        jp = frame
        jg = g8
        ds = base_ds(siim, *jg.shape)
        ds.PixelData = siim.PixelData
    else:
        bio = io.BytesIO()
        Image.fromarray(g8[300:364, 300:380]).save(bio, "JPEG", quality=90)
        jp = bio.getvalue()
        jg = np.asarray(Image.open(io.BytesIO(jp)).convert("L"))
        ds = base_ds(siim, *jg.shape)
        ds.PixelData = encapsulate([jp], has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    out.add("jpeg_baseline", to_bytes(ds, JPEGBaseline8Bit), "ok",
            expected(jg.astype(np.int64), False), "minmax")
    ds.PixelData = encapsulate([jp], fragments_per_frame=3, has_bot=False)
    ds["PixelData"].is_undefined_length = True
    out.add("jpeg_fragments", to_bytes(ds, JPEGBaseline8Bit), "ok",
            expected(jg.astype(np.int64), False), "minmax")
    bio = io.BytesIO()
    Image.fromarray(255 - jg).save(bio, "JPEG", quality=80)
    ds.PixelData = encapsulate([jp, bio.getvalue()], fragments_per_frame=2, has_bot=True)
    ds["PixelData"].is_undefined_length = True
    ds.NumberOfFrames = 2
    ds.PhotometricInterpretation = "MONOCHROME1"
    out.add("jpeg_two_frames", to_bytes(ds, JPEGBaseline8Bit), "ok",
            expected(jg.astype(np.int64), True), "minmax")
    ds.PixelData = encapsulate([jp, bio.getvalue()], fragments_per_frame=1, has_bot=False)
    ds["PixelData"].is_undefined_length = True
    out.add("jpeg_two_frames_nobot", to_bytes(ds, JPEGBaseline8Bit), "ok",
            expected(jg.astype(np.int64), True), "minmax")
    ds.PixelData = encapsulate([jp, bio.getvalue()], fragments_per_frame=3, has_bot=False)
    ds["PixelData"].is_undefined_length = True
    out.add("jpeg_two_frames_nobot_fragments", to_bytes(ds, JPEGBaseline8Bit), "ok",
            expected(jg.astype(np.int64), True), "minmax")

    # a fragment that is not a JPEG stream; encapsulated data in a native syntax
    ds.PixelData = encapsulate([bytes(range(100))], has_bot=True)
    ds["PixelData"].is_undefined_length = True
    del ds.NumberOfFrames
    b = to_bytes(ds, JPEGBaseline8Bit)
    out.add("jpeg_not_jpeg", b, "malformed", says="JPEG")
    out.add("encapsulated_in_native", set_ts_raw(b, ExplicitVRLittleEndian), "malformed",
            says="encapsulated")

    # ---- errors (tiny images) ----
    tiny = raw_all[200:216, 200:216].copy()
    ds = base_ds(cr, 16, 16)
    set_pixels(ds, tiny.astype("<u2").tobytes())
    good = to_bytes(ds, ExplicitVRLittleEndian)
    # compressed syntaxes chexd reads, labelling native pixel data: malformed
    for uid in ("1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
                "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
                "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.51"):
        out.add("ts_" + uid.replace("1.2.840.10008.", "").replace(".", "_"),
                set_ts_raw(good, uid), "malformed", says=uid)
    # a plain data set labelled deflated is not a deflate stream
    out.add("ts_1_2_1_99", set_ts_raw(good, "1.2.840.10008.1.2.1.99"), "malformed",
            says="Deflated")
    for uid in ("1.2.840.10008.1.2.2", "1.2.3.4.5.6"):
        out.add("ts_" + uid.replace("1.2.840.10008.", "").replace(".", "_"),
                set_ts_raw(good, uid), "unsupported", says=uid)

    # 16-bit, 3 samples (RGB)
    d3 = base_ds(cr, 16, 16)
    d3.SamplesPerPixel, d3.PhotometricInterpretation, d3.PlanarConfiguration = 3, "RGB", 0
    set_pixels(d3, np.repeat(tiny.ravel(), 3).astype("<u2").tobytes())
    out.add("rgb16", to_bytes(d3, ExplicitVRLittleEndian), "unsupported", says="Samples")
    d3 = copy.deepcopy(ds)
    d3.PhotometricInterpretation = "PALETTE COLOR"
    out.add("palette", to_bytes(d3, ExplicitVRLittleEndian), "unsupported", says="PALETTE")
    d3 = copy.deepcopy(ds)
    d3.BitsAllocated, d3.BitsStored, d3.HighBit = 32, 32, 31
    set_pixels(d3, tiny.astype("<u4").tobytes())
    out.add("bits32", to_bytes(d3, ExplicitVRLittleEndian), "unsupported", says="Allocated")

    # no Pixel Data
    d3 = copy.deepcopy(ds)
    del d3.PixelData
    out.add("no_pixels", to_bytes(d3, ExplicitVRLittleEndian), "unusable", says="(7FE0,0010)")
    # Pixel Data shorter than Rows x Columns x 2
    d3 = copy.deepcopy(ds)
    d3.Rows = 17
    out.add("short_pixels", to_bytes(d3, ExplicitVRLittleEndian), "malformed", says="Pixel")
    # huge lengths: a private element and the Pixel Data claim ~4 GiB
    d3 = copy.deepcopy(ds)
    d3.add_new(0x00091001, "OB", b"QQQQ")
    b = to_bytes(d3, ExplicitVRLittleEndian)
    b = b.replace(b"\x09\x00\x01\x10OB\0\0\x04\0\0\0", b"\x09\x00\x01\x10OB\0\0\xf0\xff\xff\xff")
    out.add("huge_element", b, "malformed", says="(0009,1001)")
    b = bytearray(good)
    i = b.index(b"\xe0\x7f\x10\x00OW\0\0")
    b[i + 8:i + 12] = struct.pack("<I", 0xFFFFFFFE)
    out.add("huge_pixel_length", bytes(b), "malformed", says="(7FE0,0010)")
    # sequences nested past the parser's bound
    d3 = copy.deepcopy(ds)
    d3.add_new(0x00091001, "OB", b"QQQQ")
    b = to_bytes(d3, ExplicitVRLittleEndian)
    nest = b""
    for _ in range(40):
        nest += b"\x09\x00\x02\x10SQ\0\0\xff\xff\xff\xff" + struct.pack("<HHI", 0xFFFE, 0xE000,
                                                                          0xFFFFFFFF)
    for _ in range(40):
        nest += struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    b = b.replace(b"\x09\x00\x01\x10OB\0\0\x04\0\0\0QQQQ", nest)
    out.add("nested_too_deep", b, "malformed", says="nested")
    # a sequence never closed
    d3 = copy.deepcopy(ds)
    d3.add_new(0x00091001, "OB", b"QQQQ")
    b = to_bytes(d3, ExplicitVRLittleEndian)
    i = b.index(b"\x09\x00\x01\x10OB")
    b = b[:i] + b"\x09\x00\x02\x10SQ\0\0\xff\xff\xff\xff" + struct.pack("<HHI", 0xFFFE, 0xE000, 8)
    out.add("unclosed_sequence", b, "malformed")
    # an item directly inside an item; a delimiter outside any sequence
    b = to_bytes(d3, ExplicitVRLittleEndian)
    for nm, raw_el in (("item_in_item", b"\x09\x00\x02\x10SQ\0\0\xff\xff\xff\xff" +
                        struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) +
                        struct.pack("<HHI", 0xFFFE, 0xE000, 0) +
                        struct.pack("<HHI", 0xFFFE, 0xE00D, 0) +
                        struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)),
                       ("stray_delimiter", struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))):
        i = b.index(b"\x28\x00\x02\x00US")
        out.add(nm, b[:i] + raw_el + b[i:], "malformed", says="misplaced")
    # no Transfer Syntax UID in the file meta group
    b = good
    i = b.index(b"\x02\x00\x10\x00UI")
    n = struct.unpack_from("<H", b, i + 6)[0]
    out.add("no_transfer_syntax", b[:i] + b[i + 8 + n:], "malformed", says="(0002,0010)")
    out.close()


if __name__ == "__main__":
    main()
