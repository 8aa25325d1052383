#!/usr/bin/env bash
# The curl examples of docs/API.md work as written (run from the repository
# root against a daemon; only the port is changed from 8080 to the test's).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start_daemon apidoc
"$PY" - "$ROOT/docs/API.md" >"$TMPD/cmds" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
for block in re.findall(r"```sh\n(.*?)```", text, re.S):
    block = block.replace("\\\n", " ")
    for line in block.splitlines():
        line = " ".join(line.split())
        if line.startswith("curl ") and "127.0.0.1:8080" in line:
            print(line)
PY
n=$(wc -l <"$TMPD/cmds")
[ "$n" -ge 10 ] || fail "only $n curl examples found in docs/API.md"
# Run from a folder that looks like the repository root (tests/ linked), so
# files an example writes (-o overlay.png) land in the temporary folder.
mkdir -p "$TMPD/repo" && ln -s "$ROOT/tests" "$TMPD/repo/tests"
i=0
while IFS= read -r cmd; do
  i=$((i + 1))
  cmd=${cmd//127.0.0.1:8080/127.0.0.1:$PORT}
  (cd "$TMPD/repo" && eval "$cmd") >"$TMPD/out.$i" || fail "example $i exits non-zero: $cmd"
  "$PY" - "$TMPD/out.$i" "$cmd" "$TMPD/repo" <<'PY' || fail "example $i: $cmd -> $(head -c 300 "$TMPD/out.$i")"
import json, os, re, sys
body = open(sys.argv[1], "rb").read().decode()
cmd = sys.argv[2]
out = re.search(r" -o (\S+)", cmd)
if out:
    with open(os.path.join(sys.argv[3], out.group(1)), "rb") as f:
        head = f.read(132)
    if out.group(1).endswith(".dcm"):
        assert head[128:132] == b"DICM", out.group(1)
    elif out.group(1).endswith(".multipart"):
        assert head.startswith(b"--chexd-"), out.group(1)
    else:
        assert head[:8] == b"\x89PNG\r\n\x1a\n", out.group(1)
elif " -i " in cmd:
    assert body.startswith("HTTP/1.1 405") and "Allow: GET" in body, body
elif cmd.endswith("/metrics"):
    assert "chexd_requests_total" in body, body
else:
    j = json.loads(body)
    if "text/plain" in cmd:
        assert j["error"]["code"] == "unsupported_media_type", j
    elif "/v1/predict" in cmd:
        for one in (j if isinstance(j, list) else [j]):
            assert one["predictions"], one
        if " -F " in cmd:
            assert isinstance(j, list) and len(j) == cmd.count(" -F "), j
PY
done <"$TMPD/cmds"
ok "$n curl examples of docs/API.md work"
stop_daemon "$PID" || fail "exit status"
