#!/usr/bin/env bash
# chex evaluate's AUROC vs scikit-learn's roc_auc_score on random and tied
# scores, DeLong SE vs the O(n^2) definition, seeded bootstrap (see the .py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BIN=${BIN:-bin}
PY=${PY:-/usr/bin/python3}
TMPD=$(mktemp -d "${TMPDIR:-/tmp}/chex-sklearn.XXXXXX")
trap 'rm -rf "$TMPD"' EXIT
"$PY" tests/reference/test_auroc_sklearn.py "$BIN/chex" "$TMPD"
