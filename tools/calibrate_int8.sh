#!/usr/bin/env bash
# tools/calibrate_int8.sh - int8 calibration of a weights file over real radiographs.
#
#   tools/calibrate_int8.sh MODEL.safetensors OUT.safetensors [IMAGE|DIR ...]
#
# Runs the fp32 network over the images (PNG, JPEG, DICOM; directories are
# searched for *.png *.jpg *.jpeg *.dcm) and writes OUT: MODEL's tensors plus
# what `precision: int8` needs: the metadata key int8_act_max (the largest
# input value of every int8 convolution) and, per int8 convolution, its
# weights rounded to int8 by GPTQ with per-channel input scales
# (<conv>.int8_weight/.int8_scale/.int8_act_scale). Without images it uses the
# shared radiographs (../shared/data/xrays, or $CHEX_XRAYS), else tests/data.
# Use radiographs like the ones the service will see: a range the
# calibration never saw is clipped at serving time.
# Environment: BIN (default bin) for bin/chex.
set -euo pipefail
if [ $# -lt 2 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  [ $# -ge 2 ] || exit 2
  exit 0
fi
model=$1 out=$2
shift 2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
chex=${BIN:-$root/bin}/chex
[ -x "$chex" ] || { echo "calibrate_int8: $chex not found (run make)" >&2; exit 2; }
if [ $# -eq 0 ]; then
  for d in "${CHEX_XRAYS:-}" "$root/../shared/data/xrays" "$root/tests/data"; do
    if [ -n "$d" ] && [ -d "$d" ]; then set -- "$d"; break; fi
  done
fi
images=()
for a in "$@"; do
  if [ -d "$a" ]; then
    while IFS= read -r f; do images+=("$f"); done < <(
      find "$a" -maxdepth 1 -type f \( -iname '*.png' -o -iname '*.jpg' -o -iname '*.jpeg' \
        -o -iname '*.dcm' \) | LC_ALL=C sort)
  elif [ -f "$a" ]; then
    images+=("$a")
  else
    echo "calibrate_int8: $a: no such file or directory" >&2
    exit 2
  fi
done
[ ${#images[@]} -gt 0 ] || { echo "calibrate_int8: no images found" >&2; exit 2; }
exec "$chex" calibrate --model "$model" --out "$out" "${images[@]}"
