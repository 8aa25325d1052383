#!/usr/bin/env bash
# precision int8 vs chexd's fp32 on real radiographs, for the demo weights and
# a torch-made checkpoint, on every ISA path (tests/reference/int8_check.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
: "${BIN:=bin}" "${MODELS:=models}" "${PY:=/usr/bin/python3}"
work=$(mktemp -d "${TMPDIR:-/tmp}/chex-int8.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$PY" tests/reference/int8_check.py --chex "$BIN/chex" --demo "$MODELS/chexnet-demo.safetensors" \
  --xrays ../shared/data/xrays --work "$work"
