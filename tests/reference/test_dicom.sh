#!/usr/bin/env bash
# DICOM input vs an independent reference, on whole images: makes full-size
# variants of tests/data/cr-mono1-10-chest.dcm and siim-pneumothorax-sample.dcm
# (tests/data/make_dicom_variants.py --full: implicit VR, signed, rescale,
# minmax, MONOCHROME2, sequences, odd lengths, VOI functions, multi-frame,
# JPEG Baseline fragments, compressed syntaxes, broken files) and, with dcmtk,
# transcoded/compressed copies and an img2dcm JPEG, decodes each with
# chex_pre_decode from $BUILD/libchex_pre.a, and compares:
#   - with the numpy reference the generator wrote (max |diff| <= 1e-5),
#   - where pydicom can render the variant itself (apply_modality_lut +
#     apply_voi_lut, PIL for JPEG), with pydicom too (max |diff| <= 1e-5),
#   - with dcmtk's dcm2pnm/dcmj2pnm 16-bit rendering (+Wi 1 / +Wm), within 2/65535,
#   - error variants: the expected error code and a message naming the cause.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
CC=${CC:-gcc}
make -s BUILD="$BUILD" BIN="${BIN:-bin}" "$BUILD/libchex_pre.a"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat >"$work/dicom_driver.c" <<'EOF'
/* dicom_driver DIR: for every "NAME ..." line of DIR/MANIFEST decodes
 * DIR/NAME.dcm with chex_pre_decode, writes DIR/NAME.out.f32 when it decodes,
 * prints "NAME CODE WIDTH HEIGHT SCALING BITDEPTH\tMESSAGE". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preprocessing/preprocess.h"

static const char *code(chex_pre_err e)
{
    switch (e) {
    case CHEX_PRE_OK: return "ok";
    case CHEX_PRE_ERR_MALFORMED: return "malformed";
    case CHEX_PRE_ERR_UNSUPPORTED: return "unsupported";
    case CHEX_PRE_ERR_UNUSABLE: return "unusable";
    case CHEX_PRE_ERR_TOO_LARGE: return "too_large";
    case CHEX_PRE_ERR_FORMAT: return "format";
    default: return "other";
    }
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    char path[4096], name[256], rest[512];
    snprintf(path, sizeof path, "%s/MANIFEST", argv[1]);
    FILE *m = fopen(path, "r");
    if (!m)
        return 2;
    const chex_pre_opts opts = {.max_pixels = 1u << 24, .min_side = 8};
    while (fscanf(m, "%255s %511[^\n]", name, rest) == 2) {
        snprintf(path, sizeof path, "%s/%s.dcm", argv[1], name);
        FILE *f = fopen(path, "rb");
        if (!f)
            return 2;
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        rewind(f);
        unsigned char *buf = malloc((size_t)n);
        if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
            return 2;
        fclose(f);
        chex_pre_image img;
        char msg[512] = "";
        chex_pre_err e = chex_pre_decode(buf, (size_t)n, &opts, &img, msg, sizeof msg);
        free(buf);
        if (e == CHEX_PRE_OK) {
            snprintf(path, sizeof path, "%s/%s.out.f32", argv[1], name);
            FILE *o = fopen(path, "wb");
            size_t np = (size_t)img.width * (size_t)img.height * (size_t)img.channels;
            if (!o || fwrite(img.pix, sizeof(float), np, o) != np || fclose(o))
                return 2;
            printf("%s ok %d %d %s %d\t%s/%s/%s\n", name, img.width, img.height, img.scaling,
                   img.bit_depth, img.dicom.modality, img.dicom.photometric,
                   img.dicom.transfer_syntax);
            chex_pre_image_free(&img);
        } else {
            printf("%s %s - - - -\t%s\n", name, code(e), msg);
        }
    }
    fclose(m);
    return 0;
}
EOF
$CC -O2 -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -fopenmp -I. -o "$work/dicom_driver" \
  "$work/dicom_driver.c" "$BUILD/libchex_pre.a" -lpng16 -ljpeg -lturbojpeg -lopenjp2 -lcharls -ljansson -lz -lm

"$PY" tests/data/make_dicom_variants.py "$work/v" --full

# Files written by another toolkit (dcmtk), added to the same manifest: the real
# CR transcoded to Implicit VR LE, to the lossless compressed syntaxes and to one
# we refuse (big endian), and a real NIH
# radiograph made into a JPEG Baseline DICOM by img2dcm (and decompressed by
# dcmdjpeg to Explicit VR LE); expected images: the CR's numpy reference, PIL's
# decode of the JPEG, min..max.
v=$work/v
cr=tests/data/cr-mono1-10-chest.dcm
dcmconv +ti "$cr" "$v/cr_dcmtk_implicit.dcm"
cp "$v/cr_explicit.f32" "$v/cr_dcmtk_implicit.f32"
echo "cr_dcmtk_implicit ok 440 440 window" >>"$v/MANIFEST"
dcmconv +tb "$cr" "$v/cr_dcmtk_bigendian.dcm"
dcmconv +td "$cr" "$v/cr_dcmtk_deflate.dcm"
dcmcjpeg "$cr" "$v/cr_dcmtk_jpeg_lossless.dcm"
dcmcrle "$cr" "$v/cr_dcmtk_rle.dcm"
dcmcjpls "$cr" "$v/cr_dcmtk_jpegls.dcm"
# the lossless ones decode to the same image as the original (more in
# tests/reference/test_dicom_compressed.sh)
for n in deflate jpeg_lossless rle jpegls; do
  cp "$v/cr_explicit.f32" "$v/cr_dcmtk_$n.f32"
  echo "cr_dcmtk_$n ok 440 440 window" >>"$v/MANIFEST"
done
cat >>"$v/MANIFEST" <<'MAN'
cr_dcmtk_bigendian unsupported - - 1.2.840.10008.1.2.2
MAN
"$PY" - "$v" <<'EOF2'
import sys
import numpy as np
from PIL import Image
v = sys.argv[1]
Image.open("tests/data/00000001_000.png").convert("L").save(f"{v}/nih.jpg", quality=92)
g = np.asarray(Image.open(f"{v}/nih.jpg")).astype(np.float64)
((g - g.min()) / (g.max() - g.min())).astype("<f4").tofile(f"{v}/jpeg_img2dcm.f32")
EOF2
img2dcm -i JPEG "$v/nih.jpg" "$v/jpeg_img2dcm.dcm"
dcmdjpeg "$v/jpeg_img2dcm.dcm" "$v/nih_dcmdjpeg.dcm"
cp "$v/jpeg_img2dcm.f32" "$v/nih_dcmdjpeg.f32"
img2dcm -i JPEG tests/data/16747_3_1.jpg "$v/rgb_img2dcm.dcm"
cat >>"$v/MANIFEST" <<'MAN'
jpeg_img2dcm ok 512 512 minmax
nih_dcmdjpeg ok 512 512 minmax
rgb_img2dcm unsupported - - Samples
MAN

"$work/dicom_driver" "$work/v" >"$work/results.txt"

"$PY" - "$work/v" "$work/results.txt" <<'EOF'
import io
import subprocess
import sys
import warnings

import numpy as np
import pydicom
from PIL import Image
from pydicom.encaps import generate_pixel_data_frame
from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

warnings.filterwarnings("ignore", "Expected explicit VR")  # cr_mislabelled_implicit
vdir, results = sys.argv[1], sys.argv[2]
TOL = 1e-5
manifest = {}
for line in open(f"{vdir}/MANIFEST"):
    name, expect, rows, cols, extra = line.split()
    manifest[name] = (expect, rows, cols, extra)
got = {}
for line in open(results):
    head, msg = line.rstrip("\n").split("\t", 1)
    f = head.split()
    got[f[0]] = (f[1], f[2], f[3], f[4], msg)


def pydicom_render(name):
    """pydicom's own rendering to [0,1], where it has one for the variant."""
    ds = pydicom.dcmread(f"{vdir}/{name}.dcm")
    if ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50":
        frame = next(generate_pixel_data_frame(ds.PixelData, int(ds.get("NumberOfFrames", 1))))
        x = np.asarray(Image.open(io.BytesIO(frame)).convert("L")).astype(np.float64)
        y = (x - x.min()) / (x.max() - x.min())
    elif ds.file_meta.TransferSyntaxUID.is_compressed:
        return None  # pydicom 2.3 on Debian has no decoder for them (test_dicom_compressed.sh)
    else:
        if ds.PixelRepresentation != 0 or "RescaleSlope" in ds or ds.get("NumberOfFrames", 1) > 1:
            return None  # pydicom 2.3 neither sign-extends from Bits Stored nor maps these to [0,1]
        a = ds.pixel_array.astype(np.int64) & ((1 << ds.BitsStored) - 1)
        if "WindowCenter" not in ds or float(ds.WindowWidth) < 1:
            return None  # min..max: the numpy reference covers it
        v = apply_voi_lut(apply_modality_lut(a, ds), ds, index=0)
        y = v / ((1 << ds.BitsStored) - 1)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        y = 1.0 - y
    return y


DCMTK_TOL = 2.0 / 65535  # dcmtk writes 16-bit samples


def dcmtk_render(name, scaling):
    """dcmtk's rendering (dcm2pnm / dcmj2pnm, 16-bit PNG) to [0,1]: +Wi 1 = the
    first stored window, +Wm = min..max; MONOCHROME1 inverted as a viewer shows it.
    None where dcmtk 3.6.7 differs on purpose: it ignores LINEAR_EXACT, rounds
    non-integer rescaled values before windowing, and refuses a data set
    labelled explicit VR but written implicit."""
    if scaling == "window-exact" or name in ("cr_rescale", "cr_mislabelled_implicit"):
        return None
    tool = ("dcml2pnm" if name.endswith("jpegls")  # dcmtk's JPEG-LS renderer
            else "dcmj2pnm" if name.startswith(("jpeg_", "cr_dcmtk_")) else "dcm2pnm")
    mode = "+Wm" if scaling == "minmax" else "+Wi"
    args = [tool, "--write-16-bit-png", mode] + (["1"] if mode == "+Wi" else [])
    png = f"{vdir}/{name}.dcmtk.png"
    subprocess.run(args + [f"{vdir}/{name}.dcm", png], check=True, stderr=subprocess.DEVNULL)
    return np.asarray(Image.open(png)).astype(np.float64) / 65535.0


bad = 0
checked_pyd = checked_dcmtk = 0
for name, (expect, rows, cols, extra) in manifest.items():
    if name not in got:
        print(f"FAIL {name}: no result"); bad += 1; continue
    code, w, h, scaling, msg = got[name]
    if code != expect:
        print(f"FAIL {name}: got {code} ({msg}), want {expect}"); bad += 1; continue
    if expect != "ok":
        if extra != "-" and extra not in msg:
            print(f"FAIL {name}: message '{msg}' does not name {extra}"); bad += 1
        else:
            print(f"ok   {name}: {code}: {msg}")
        continue
    if (h, w, scaling) != (rows, cols, extra):
        print(f"FAIL {name}: {w}x{h} {scaling}, want {cols}x{rows} {extra}"); bad += 1; continue
    out = np.fromfile(f"{vdir}/{name}.out.f32", "<f4").reshape(int(rows), int(cols))
    ref = np.fromfile(f"{vdir}/{name}.f32", "<f4").reshape(int(rows), int(cols))
    d = float(np.abs(out.astype(np.float64) - ref).max())
    line = f"{name}: {cols}x{rows} {scaling} max|diff| numpy {d:.2e}"
    if d > TOL:
        print("FAIL " + line); bad += 1; continue
    p = pydicom_render(name)
    if p is not None:
        dp = float(np.abs(out.astype(np.float64) - p).max())
        line += f", pydicom {dp:.2e}"
        checked_pyd += 1
        if dp > TOL:
            print("FAIL " + line); bad += 1; continue
    t = dcmtk_render(name, scaling)
    if t is not None:
        dt = float(np.abs(out.astype(np.float64) - t).max())
        line += f", dcmtk {dt:.2e}"
        checked_dcmtk += 1
        if dt > DCMTK_TOL:
            print("FAIL " + line); bad += 1; continue
    print("ok   " + line)
print(f"{len(manifest)} variants, {checked_pyd} also against pydicom's rendering, "
      f"{checked_dcmtk} against dcmtk's (within {DCMTK_TOL:.2e}), {bad} failed")
if checked_dcmtk < 15:
    print("FAIL: too few variants checked against dcmtk"); bad += 1
if checked_pyd < 8:
    print("FAIL: too few variants checked against pydicom"); bad += 1
sys.exit(1 if bad else 0)
EOF
