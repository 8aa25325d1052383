#!/usr/bin/env bash
# Compressed DICOM against independent decoders (test_dicom_compressed.py):
# every file of tests/data/dicom-compressed/ (real NEMA WG04 CRs and dcmtk
# re-encodings, see its PROVENANCE.md) and variants generated here from the
# shared radiographs (8/12/16-bit, signed with rescale, MONOCHROME1/2, with and
# without window; JPEG Lossless every predictor, with and without restart
# intervals; JPEG-LS lossless/near; RLE; deflate; JPEG 2000 lossless/lossy;
# HTJ2K lossless, lossless RPCL and lossy made by OpenJPH's ojph_compress)
# are (1) decoded to integer samples by preprocessing/codecs.h (codec_driver)
# and compared with dcmtk's dcmdjpeg/dcmdjpls/dcmdrle, OpenJPH's ojph_expand
# (lossless HTJ2K) or OpenJPEG's opj_decompress, sample for sample; (2)
# classified by `bin/chex classify` next to the reference decode re-written as uncompressed DICOM, probabilities
# within 1e-6 (lossless syntaxes) or 1e-5 (lossy ones).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD=${BUILD:-build}
BIN=${BIN:-bin}
MODELS=${MODELS:-models}
PY=${PY:-/usr/bin/python3}
CC=${CC:-gcc}
make -s BUILD="$BUILD" BIN="$BIN" MODELS="$MODELS" "$BUILD/libchex_pre.a" "$BIN/chex" \
  "$MODELS/chexnet-demo.safetensors"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$CC -O2 -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -fopenmp -I. tests/reference/codec_driver.c \
  "$BUILD/libchex_pre.a" -lpng16 -ljpeg -lturbojpeg -lopenjp2 -lcharls -ljansson -lz -lm \
  -o "$work/codec_driver"
"$PY" tests/reference/test_dicom_compressed.py "$work" "$work/codec_driver" "$BIN/chex" \
  "$MODELS/chexnet-demo.safetensors"
