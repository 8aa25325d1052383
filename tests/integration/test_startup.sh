#!/usr/bin/env bash
# Start-up fails fast with exit 2 and one clear line: busy port, bad model,
# bad config (file, env, flag). --help, --version, --check-config.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

expect2() { # WHAT PATTERN command...: exit status 2, one stderr line matching PATTERN
  local what=$1 pat=$2 rc=0; shift 2
  "$@" >"$TMPD/out" 2>"$TMPD/err" </dev/null || rc=$?
  [ "$rc" = 2 ] || fail "$what: exit $rc, wanted 2: $(cat "$TMPD/err")"
  [ "$(wc -l <"$TMPD/err")" = 1 ] || fail "$what: wanted one line: $(cat "$TMPD/err")"
  grep -q -- "$pat" "$TMPD/err" || fail "$what: '$pat' not in: $(cat "$TMPD/err")"
  ok "$what: exit 2, $(cat "$TMPD/err")"
}

# Busy port: a running chexd holds it.
start_daemon first
expect2 "busy port" "Address already in use" "$CHEXD" --model "$DEMO" --listen 127.0.0.1 --port "$PORT"
curl -sf "$URL/healthz" >/dev/null || fail "first daemon hurt"
stop_daemon "$PID" || fail "exit status"

p=$(free_port)
expect2 "missing model" "$TMPD/none.safetensors" "$CHEXD" --model "$TMPD/none.safetensors" --port "$p"
head -c 4096 /dev/urandom >"$TMPD/garbage.safetensors"
expect2 "garbage model" "garbage.safetensors" "$CHEXD" --model "$TMPD/garbage.safetensors" --port "$p"
head -c 1000000 "$DEMO" >"$TMPD/truncated.safetensors"
expect2 "truncated model" "truncated.safetensors" "$CHEXD" --model "$TMPD/truncated.safetensors" --port "$p"
# int8 needs the model's calibration: the raw demo weights (before make
# calibrates them) have none.
"$BUILD/tools/make_demo_weights" "$TMPD/uncalibrated.safetensors" || fail "make_demo_weights"
expect2 "precision int8 without calibration" 'precision: "int8" needs.*int8_act_max: missing' \
  "$CHEXD" --model "$TMPD/uncalibrated.safetensors" --port "$p" --precision int8
expect2 "chex classify --precision int8 without calibration" 'precision: "int8" needs' \
  "$BIN/chex" classify --model "$TMPD/uncalibrated.safetensors" --precision int8 "$DATA/00000001_000.png"
expect2 "precision int16" 'precision' "$CHEXD" --model "$DEMO" --port "$p" --precision int16
"$PY" - "$p" <<'PY' || fail "port still bound after failed starts"
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.close()
PY

echo '{"queue_depth": "many"}' >"$TMPD/bad-type.json"
expect2 "--check-config bad file value" queue_depth "$CHEXD" --config "$TMPD/bad-type.json" --check-config
echo '{"queue_dept": 4}' >"$TMPD/bad-key.json"
expect2 "--check-config unknown file key" queue_dept "$CHEXD" --config "$TMPD/bad-key.json" --check-config
echo '{ not json' >"$TMPD/bad.json"
expect2 "--check-config unparsable file" bad.json "$CHEXD" --config "$TMPD/bad.json" --check-config
expect2 "--check-config bad env" CHEXD_MAX_BATCH env CHEXD_MAX_BATCH=abc "$CHEXD" --check-config
expect2 "--check-config bad flag" "port" "$CHEXD" --port 70000 --check-config
expect2 "bad flag at start" "queue-depth" "$CHEXD" --queue-depth 0

"$CHEXD" --check-config --queue-depth 3 >"$TMPD/eff.json" || fail "--check-config"
[ "$(json_get "$TMPD/eff.json" 'j["queue_depth"]')" = 3 ] || fail "effective config: $(cat "$TMPD/eff.json")"
ok "--check-config prints the effective config"
"$CHEXD" --help >"$TMPD/help" || fail "--help"
for k in listen port threads model max_upload_bytes queue_depth max_batch batch_window_ms \
         request_timeout_ms log_level log_format api_token_file tls_cert_file tls_key_file; do
  grep -q -- "--${k//_/-}" "$TMPD/help" || fail "--help lacks --${k//_/-}"
done
ok "--help documents the keys"
"$CHEXD" --version | grep -q '^chexd [0-9]' || fail "--version"
ok "--version"
