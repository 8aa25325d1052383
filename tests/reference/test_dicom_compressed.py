#!/usr/bin/python3
"""Compressed DICOM vs dcmtk / OpenJPEG (run by test_dicom_compressed.sh).

    test_dicom_compressed.py WORKDIR CODEC_DRIVER CHEX MODEL

For every case: REF = the same pixels decoded by an independent tool
(dcmdjpeg, dcmdjpls, dcmdrle, dcmconv +te; OpenJPH's ojph_expand for lossless
HTJ2K; opj_decompress for JPEG 2000 and lossy HTJ2K, which must then be
within a few units of ojph_expand's decode;
re-wrapped here as Explicit VR LE with the codestream's precision and
signedness, the rule chexd follows). Checks:
  1. codec_driver's integer samples == REF's first frame, sample for sample
     (not for deflate, which has no frame codec: its data set is native);
  2. `chex classify` of the compressed file and of REF: max |probability
     difference| <= 1e-6 (lossless) or 1e-5 (lossy);
  3. the answer names the transfer syntax and frames/frame.
Prints one line per case and the worst difference per group; exit 1 on any
failure. Needs dcmtk, libopenjp2-tools, libjpeg-tools, pydicom, numpy, PIL.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pydicom
from PIL import Image
from pydicom.encaps import encapsulate, generate_pixel_data_frame
from pydicom.uid import ExplicitVRLittleEndian

WORK, DRIVER, CHEX, MODEL = sys.argv[1:5]
DATA = "tests/data/dicom-compressed"
LOSSY = {"1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.51",
         "1.2.840.10008.1.2.4.203"}
# HTJ2K lossless (.201, .202 RPCL) and lossy-allowed (.203), JPEG 2000 Part 15
HTJ2K = {"1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}
J2K = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"} | HTJ2K
JPEG = {"1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.51"}
JLS = {"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
RLE = "1.2.840.10008.1.2.5"
DEFLATE = "1.2.840.10008.1.2.1.99"
failures = []

# pydicom 2.3 predates the HTJ2K UIDs: register them so it writes such files
from pydicom._uid_dict import UID_dictionary  # noqa: E402
for _u, _n in zip(sorted(HTJ2K), ("HTJ2K Lossless", "HTJ2K Lossless RPCL", "HTJ2K")):
    UID_dictionary.setdefault(_u, (_n, "Transfer Syntax", "", "", ""))


def run(args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fail(msg):
    failures.append(msg)
    print("FAIL " + msg)


def first_frame(ds):
    return next(generate_pixel_data_frame(ds.PixelData, int(ds.get("NumberOfFrames", 1) or 1)))


def reference(path, ref):
    """Decodes path with the independent tool into ref (uncompressed DICOM)."""
    ds = pydicom.dcmread(path)
    ts = str(ds.file_meta.TransferSyntaxUID)
    if ts in JPEG:
        run(["dcmdjpeg", path, ref])
    elif ts in JLS:
        run(["dcmdjpls", path, ref])
    elif ts == RLE:
        run(["dcmdrle", path, ref])
    elif ts == DEFLATE:
        run(["dcmconv", "+te", path, ref])
    elif ts in J2K:
        cs = ref + ".j2k"
        with open(cs, "wb") as f:
            f.write(first_frame(ds))
        dump = subprocess.run(["opj_dump", "-i", cs], check=True, capture_output=True,
                              text=True).stdout
        prec = int(dump.split("prec=")[1].split()[0])
        sgnd = int(dump.split("sgnd=")[1].split()[0])
        if ts in HTJ2K and ts != "1.2.840.10008.1.2.4.203":
            # lossless HTJ2K: OpenJPH's own decoder, independent of OpenJPEG
            a = read_pgm(ojph_expand(cs, ref + ".pgm"))
        else:
            raw = ref + ".rawl"
            run(["opj_decompress", "-i", cs, "-o", raw])
            dt = ("<i2" if sgnd else "<u2") if prec > 8 else ("i1" if sgnd else "u1")
            a = np.fromfile(raw, dtype=dt).astype(np.int64)
            if ts in HTJ2K:
                # lossy: the 9/7 wavelet in floats, the two decoders round apart by
                # a few units of 2^-14 of the range (measured: 1 at 8/12 bits, 3 at 16)
                d = np.abs(read_pgm(ojph_expand(cs, ref + ".pgm")).ravel() - a).max()
                tol = max(1, 2 ** (prec - 14))
                print(f"     {os.path.basename(path)}: opj_decompress vs ojph_expand max "
                      f"|diff| {d} (<= {tol})")
                if d > tol:
                    fail(f"{os.path.basename(path)}: opj_decompress and ojph_expand differ "
                         f"by {d}")
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.BitsAllocated = 16
        ds.BitsStored = prec
        ds.HighBit = prec - 1
        ds.PixelRepresentation = sgnd
        ds.NumberOfFrames = 1 if "NumberOfFrames" in ds else None
        if ds.NumberOfFrames is None:
            del ds.NumberOfFrames
        ds.PixelData = (a & 0xFFFF).astype("<u2").tobytes()
        ds["PixelData"].VR = "OW"
        ds.is_implicit_VR = False
        ds.is_little_endian = True
        ds.save_as(ref, write_like_original=False)
    else:
        raise ValueError(f"no reference decoder for {ts}")
    return ts


def ojph_expand(cs, out):
    # ojph_expand wants a .j2c name
    j2c = cs + ".j2c"
    shutil.copyfile(cs, j2c)
    run(["ojph_expand", "-i", j2c, "-o", out])
    return out


def read_pgm(path):
    """Samples of a binary PGM (P5, maxval > 255: big-endian 16-bit), flat int64."""
    b = open(path, "rb").read()
    toks, i = [], 2
    while len(toks) < 3:
        while b[i:i + 1].isspace():
            i += 1
        if b[i:i + 1] == b"#":
            i = b.index(b"\n", i) + 1
            continue
        j = i
        while not b[j:j + 1].isspace():
            j += 1
        toks.append(int(b[i:j]))
        i = j
    w, h, mx = toks
    dt = ">u2" if mx > 255 else "u1"
    return np.frombuffer(b[i + 1:], dtype=dt)[:w * h].astype(np.int64)


def driver_samples(path):
    """codec_driver's samples of the first frame, or None for deflate."""
    ds = pydicom.dcmread(path)
    ts = str(ds.file_meta.TransferSyntaxUID)
    if ts == DEFLATE:
        return None
    fr = os.path.join(WORK, "frame.bin")
    with open(fr, "wb") as f:
        f.write(first_frame(ds))
    out = os.path.join(WORK, "frame.u16")
    codec = "jpegll" if ts in JPEG else "jpegls" if ts in JLS else "j2k" if ts in J2K else "rle"
    args = [DRIVER, codec, fr, out]
    if codec == "rle":
        args += [str(ds.Columns), str(ds.Rows), str(ds.SamplesPerPixel),
                 str(ds.BitsAllocated // 8)]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        return r.stderr.strip()
    w, h, spp, prec, sgnd = map(int, r.stdout.split())
    return np.fromfile(out, dtype="<u2").reshape(h, w * spp), prec


def ref_samples(ref):
    ds = pydicom.dcmread(ref)
    n = ds.Rows * ds.Columns * ds.SamplesPerPixel
    dt = "<u2" if ds.BitsAllocated == 16 else "u1"
    a = np.frombuffer(ds.PixelData, dtype=dt)[:n].astype(np.int64) & 0xFFFF
    return a.reshape(ds.Rows, ds.Columns * ds.SamplesPerPixel)


# ---- generated variants ----
def base(src, rows, cols):
    ds = pydicom.dcmread(src)
    ds.Rows, ds.Columns = rows, cols
    for k in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept",
              "RescaleType", "VOILUTFunction", "SmallestImagePixelValue",
              "LargestImagePixelValue"):
        if k in ds:
            delattr(ds, k)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.is_implicit_VR = False
    ds.is_little_endian = True
    return ds


def write_native(ds, a, bits, signed, path, photometric, window=None, rescale=None):
    ds.BitsAllocated = 8 if bits == 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.RescaleType = "US"
    dt = ("<i2" if signed else "<u2") if bits > 8 else "u1"
    ds.PixelData = a.astype(dt).tobytes()
    ds["PixelData"].VR = "OW" if bits > 8 else "OB"
    ds.save_as(path, write_like_original=False)


def sources():
    cr = "tests/data/cr-mono1-10-chest.dcm"
    v = pydicom.dcmread(cr).pixel_array.astype(np.int64) & 1023  # 10-bit CR
    nih = np.asarray(Image.open("tests/data/00000001_000.png").convert("L")).astype(np.int64)
    out = {}
    p = os.path.join(WORK, "src8.dcm")
    write_native(base(cr, *nih.shape), nih, 8, False, p, "MONOCHROME2")
    out["src8"] = p
    p = os.path.join(WORK, "src12.dcm")
    write_native(base(cr, *v.shape), v * 4 + 3, 12, False, p, "MONOCHROME1", window=(2200, 4096))
    out["src12"] = p
    p = os.path.join(WORK, "src16.dcm")
    write_native(base(cr, *v.shape), v * 64 + (v % 64), 16, False, p, "MONOCHROME2")
    out["src16"] = p
    p = os.path.join(WORK, "src12s.dcm")
    write_native(base(cr, *v.shape), v * 4 - 2048, 12, True, p, "MONOCHROME2",
                 window=(1100, 2500), rescale=(0.5, 1024))
    out["src12s"] = p
    return out


def pgm(ds_path, out):
    ds = pydicom.dcmread(ds_path)
    a = np.frombuffer(ds.PixelData, dtype="<u2" if ds.BitsAllocated == 16 else "u1")
    a = a.astype(np.int64) & ((1 << ds.BitsStored) - 1)
    with open(out, "wb") as f:
        f.write(b"P5\n%d %d\n%d\n" % (ds.Columns, ds.Rows, (1 << ds.BitsStored) - 1))
        f.write(a.astype(">u2" if ds.BitsStored > 8 else "u1").tobytes())


def encapsulated(src, codestream, ts, path):
    ds = pydicom.dcmread(src)
    with open(codestream, "rb") as f:
        ds.PixelData = encapsulate([f.read()])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = ts
    ds.save_as(path, write_like_original=False)


def generate():
    cases = []
    for sname, src in sources().items():
        def add(tag, args):
            p = os.path.join(WORK, f"{sname}_{tag}.dcm")
            run(args + [src, p])
            cases.append(p)
        for sv in range(1, 8):
            add(f"jpll_sv{sv}", ["dcmcjpeg", "+el", "+sv", str(sv)])
        add("jpll_sv1_pt2", ["dcmcjpeg", "+el", "+sv", "1", "+pt", "2"])
        add("jpll_e1", ["dcmcjpeg", "+e1"])
        add("jls", ["dcmcjpls", "+el"])
        if sname != "src12s":  # dcmcjpls refuses near-lossless for signed samples
            add("jls_near", ["dcmcjpls", "+en"])
        add("rle", ["dcmcrle"])
        add("deflate", ["dcmconv", "+td"])
        # restart intervals (dcmcjpeg has no option for them): libjpeg-tools'
        # lossless encoder, one and three rows (dcmtk and libjpeg-turbo 3 decode
        # only intervals of whole MCU rows)
        src_pgm = os.path.join(WORK, f"{sname}.pgm")
        pgm(src, src_pgm)
        cols = pydicom.dcmread(src).Columns
        for z in (cols, 3 * cols):
            cs = os.path.join(WORK, f"{sname}_rst{z}.jpg")
            run(["jpeg", "-p", "-c", "-z", str(z), src_pgm, cs])
            p = os.path.join(WORK, f"{sname}_jpll_rst{z}.dcm")
            encapsulated(src, cs, "1.2.840.10008.1.2.4.70" if b"\xff\xda" in open(cs, "rb").read()
                         else "1.2.840.10008.1.2.4.57", p)
            cases.append(p)
        # JPEG 2000 lossless and lossy
        for tag, extra, ts in (("j2k", [], "1.2.840.10008.1.2.4.90"),
                               ("j2k_lossy", ["-r", "20"], "1.2.840.10008.1.2.4.91")):
            cs = os.path.join(WORK, f"{sname}_{tag}.j2k")
            run(["opj_compress", "-i", src_pgm, "-o", cs] + extra)
            p = os.path.join(WORK, f"{sname}_{tag}.dcm")
            encapsulated(src, cs, ts, p)
            cases.append(p)
        # HTJ2K (OpenJPH's ojph_compress): lossless, lossless RPCL, lossy
        if sname != "src12s":  # PGM carries unsigned samples only
            for tag, extra, ts in (
                    ("htj2k", ["-reversible", "true", "-prog_order", "LRCP"],
                     "1.2.840.10008.1.2.4.201"),
                    ("htj2k_rpcl", ["-reversible", "true", "-prog_order", "RPCL"],
                     "1.2.840.10008.1.2.4.202"),
                    ("htj2k_lossy", ["-qstep", "0.002"], "1.2.840.10008.1.2.4.203")):
                cs = os.path.join(WORK, f"{sname}_{tag}.j2c")
                run(["ojph_compress", "-i", src_pgm, "-o", cs] + extra)
                p = os.path.join(WORK, f"{sname}_{tag}.dcm")
                encapsulated(src, cs, ts, p)
                cases.append(p)
    return cases


def fix_ts(cases):
    """JPEG Lossless streams of the jpeg tool: .70 only when the predictor is 1."""
    for p in cases:
        ds = pydicom.dcmread(p)
        if str(ds.file_meta.TransferSyntaxUID) in ("1.2.840.10008.1.2.4.70",
                                                    "1.2.840.10008.1.2.4.57"):
            fr = first_frame(ds)
            i = fr.find(b"\xff\xda")
            ns = fr[i + 4]
            sel = fr[i + 5 + 2 * ns]
            want = "1.2.840.10008.1.2.4.70" if sel == 1 else "1.2.840.10008.1.2.4.57"
            if str(ds.file_meta.TransferSyntaxUID) != want:
                ds.file_meta.TransferSyntaxUID = want
                ds.save_as(p, write_like_original=False)


def classify(paths):
    r = subprocess.run([CHEX, "classify", "--model", MODEL] + paths, capture_output=True,
                       text=True)
    out = {}
    for line in r.stdout.splitlines():
        j = json.loads(line)
        out[j["file"]] = j
    return out


def main():
    shared = sorted(os.path.join(DATA, f) for f in os.listdir(DATA) if f.endswith(".dcm"))
    cases = shared + generate()
    fix_ts(cases)
    refs, kinds, unsupported = {}, {}, []
    for p in cases:
        ts = str(pydicom.dcmread(p).file_meta.TransferSyntaxUID)
        if ts == "1.2.840.10008.1.2.4.51":
            unsupported.append(p)
            continue
        ref = os.path.join(WORK, "ref_" + os.path.basename(p))
        reference(p, ref)
        refs[p] = ref
        kinds[p] = ts
    # 1. integer samples
    nint = 0
    for p, ref in refs.items():
        got = driver_samples(p)
        if got is None:
            continue
        if isinstance(got, str):
            fail(f"{p}: codec_driver: {got}")
            continue
        a, prec = got
        b = ref_samples(ref)
        if kinds[p] in J2K:
            b = b & ((1 << prec) - 1)
        if a.shape != b.shape or not np.array_equal(a.astype(np.int64), b):
            n = -1 if a.shape != b.shape else int((a.astype(np.int64) != b).sum())
            fail(f"{os.path.basename(p)}: samples differ from the reference ({n} of {b.size})")
        else:
            nint += 1
    # 2./3. classification
    ans = classify(list(refs) + list(refs.values()) + unsupported)
    worst = {"lossless": 0.0, "lossy": 0.0}
    for p, ref in refs.items():
        a, b = ans.get(p), ans.get(ref)
        if not a or not b or "predictions" not in a or "predictions" not in b:
            fail(f"{os.path.basename(p)}: not classified: {a and a.get('error')} / "
                 f"{b and b.get('error')}")
            continue
        pa = np.array([x["probability"] for x in a["predictions"]])
        pb = np.array([x["probability"] for x in b["predictions"]])
        d = float(np.abs(pa - pb).max())
        group = "lossy" if kinds[p] in LOSSY else "lossless"
        tol = 1e-5 if group == "lossy" else 1e-6
        worst[group] = max(worst[group], d)
        dj = a.get("dicom", {})
        ok = (d <= tol and dj.get("transfer_syntax") == kinds[p] and dj.get("frame") == 1
              and dj.get("frames", 0) >= 1)
        print(f"{'ok  ' if ok else 'FAIL'} {os.path.basename(p)} {kinds[p]} "
              f"{a['input']['width']}x{a['input']['height']} {a['input']['scaling']} "
              f"max|dp| {d:.1e}")
        if not ok:
            failures.append(p)
    for p in unsupported:
        e = ans.get(p, {}).get("error", {})
        ok = e.get("code") == "unsupported_variant" and "1.2.840.10008.1.2.4.51" in e.get(
            "message", "")
        print(f"{'ok  ' if ok else 'FAIL'} {os.path.basename(p)} 415 {e.get('message')}")
        if not ok:
            failures.append(p)
    print(f"{len(refs)} compressed files ({len(shared)} shared) classified like their "
          f"reference decode: worst |dp| lossless {worst['lossless']:.1e} (<= 1e-6), lossy "
          f"{worst['lossy']:.1e} (<= 1e-5); {nint} frames sample-identical to dcmtk/OpenJPEG; "
          f"{len(unsupported)} JPEG Extended 12-bit answered 415; {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
