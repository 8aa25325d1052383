#!/usr/bin/env bash
# model_repository: the demo CheXNet-layout model (two versions) and a
# 1-channel 18-label torchxrayvision-layout demo served at once (repo.py), and
# the repository's start-up errors.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PYTHONPATH=$ROOT/tests/integration
R=$TMPD/repo
mkdir -p "$R/chexnet/1" "$R/chexnet/2"
cp "$DEMO" "$R/chexnet/1/model.safetensors"
"$PY" - "$DEMO" "$R/chexnet/2/model.safetensors" <<'PY' || fail "version 2"
import json, struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", b[:8])[0]
s, e = json.loads(b[8:8 + n])["classifier.bias"]["data_offsets"]
off, k = 8 + n + s, (e - s) // 4
bias = [v + 0.3 * (i % 3) - 0.3 for i, v in enumerate(struct.unpack("<%df" % k, b[off:off + 4 * k]))]
b[off:off + 4 * k] = struct.pack("<%df" % k, *bias)
open(sys.argv[2], "wb").write(bytes(b))
PY
"$PY" "$ROOT/tests/integration/make_xrv_demo.py" "$DEMO" "$R/xrv.safetensors" || fail "xrv demo"
echo "not a model" >"$R/README.txt"
printf 'repo-s3cret\n' >"$TMPD/token"
start_daemon repo --model-repository "$R" --api-token-file "$TMPD/token" --max-batch 2
"$PY" "$ROOT/tests/integration/repo.py" "$URL" repo-s3cret "$R" || { tail -20 "$LOG" >&2; fail "repo.py"; }
stop_daemon "$PID" || fail "chexd did not exit 0"

# start-up errors: exit 2, one line naming the key and the path
expect_exit2() { # NEEDLE ARGS...
  local needle=$1 rc=0; shift
  "$CHEXD" --port "$(free_port)" "$@" 2>"$TMPD/err" && rc=0 || rc=$?
  [ "$rc" = 2 ] && grep -q -- "$needle" "$TMPD/err" || fail "wanted exit 2 with '$needle', got $rc: $(cat "$TMPD/err")"
}
mkdir -p "$TMPD/empty" "$TMPD/nover/m/3" "$TMPD/both/m/1"
cp "$DEMO" "$TMPD/both/m.safetensors"
cp "$DEMO" "$TMPD/both/m/1/model.safetensors"
head -c 1000 "$DEMO" >"$TMPD/bad.safetensors"
mkdir -p "$TMPD/badrepo" && cp "$TMPD/bad.safetensors" "$TMPD/badrepo/x.safetensors"
expect_exit2 "model_repository: $TMPD/empty holds no NAME.safetensors" --model-repository "$TMPD/empty"
expect_exit2 "$TMPD/nover/m/3 has no model.safetensors" --model-repository "$TMPD/nover"
expect_exit2 "model m is both m.safetensors and a folder" --model-repository "$TMPD/both"
expect_exit2 "cannot open the folder $TMPD/none" --model-repository "$TMPD/none"
expect_exit2 "model $TMPD/badrepo/x.safetensors:" --model-repository "$TMPD/badrepo"
expect_exit2 "config: model_repository: set (from flag --model-repository) together with model (from flag --model)" \
  --model "$DEMO" --model-repository "$R"
ok "repository errors exit 2 naming the path: empty, version without model.safetensors, file and folder, missing folder, corrupt weights, model and model_repository both set"
