#!/usr/bin/env bash
# End-to-end test of chexd's web page in Debian's headless chromium, driven by
# playwright-core (pinned in tests/browser/package.json + package-lock.json,
# installed into $BUILD/browser with npm ci --ignore-scripts: no browser
# download, the Debian binary is used through executablePath).
#  1. chexd without a token: upload tests/data/00000001_000.png through the
#     file input, wait for the bars, compare them with the API's own answer
#     for the same file (curl), check the top finding's heat map appears, pick
#     another finding with the keyboard, check its overlay (size, colour),
#     the demo warning, timing, no request leaving chexd, a screenshot; then
#     drop tests/data/16747_3_1.jpg on the drop zone: new bars, new map.
#     (The second run drops tests/data/dicom-compressed/RG3_J2KR.dcm, a JPEG 2000 CR.)
#  2. chexd with api_token_file: the page shows the 401 first, then works
#     once the token is typed in.
# Screenshots: $BUILD/browser/page.png and $BUILD/browser/page-token.png.
source "$(dirname "${BASH_SOURCE[0]}")/../integration/lib.sh"
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
OUT=$BUILD/browser
IMAGE=$DATA/00000001_000.png
DROP_IMAGE=$DATA/16747_3_1.jpg

[ -x "$CHROMIUM" ] || fail "no $CHROMIUM (Debian package chromium, deploy/packages/test.txt)"
command -v node >/dev/null || fail "no node (Debian package nodejs)"
command -v npm >/dev/null || fail "no npm: install it (apt-get install npm) to fetch playwright-core"
[ -x "$CHEXD" ] || fail "no $CHEXD: run make first"

# playwright-core at the pinned version, reinstalled when the pin changes.
mkdir -p "$OUT"
if ! cmp -s tests/browser/package-lock.json "$OUT/package-lock.json" ||
   [ ! -f "$OUT/node_modules/playwright-core/package.json" ]; then
  cp tests/browser/package.json tests/browser/package-lock.json "$OUT/"
  (cd "$OUT" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) ||
    fail "npm ci of playwright-core failed"
fi
export NODE_PATH=$OUT/node_modules

run_page() { # NAME SHOT [TOKEN]
  local name=$1 shot=$2 token=${3:-}
  local auth=()
  [ -n "$token" ] && auth=(-H "Authorization: Bearer $token")
  curl -sf "${auth[@]}" -H 'Content-Type: image/png' --data-binary @"$IMAGE" \
    "$URL/v1/predict" > "$TMPD/$name.json" || fail "$name: the API did not classify $IMAGE"
  curl -sf "${auth[@]}" -H 'Content-Type: application/octet-stream' --data-binary @"$DROP_IMAGE" \
    "$URL/v1/predict" > "$TMPD/$name-drop.json" || fail "$name: the API did not classify $DROP_IMAGE"
  rm -rf "$TMPD/profile-$name"
  mkdir -p "$TMPD/profile-$name"
  URL=$URL IMAGE=$IMAGE EXPECT=$TMPD/$name.json SHOT=$shot PROFILE=$TMPD/profile-$name \
    CHROMIUM=$CHROMIUM TOKEN=$token DROP_IMAGE=$DROP_IMAGE DROP_EXPECT=$TMPD/$name-drop.json \
    timeout 300 node tests/browser/page.js ||
    { tail -20 "$LOG" >&2; fail "$name: the page test failed"; }
}

start_daemon page --threads 2
run_page page "$OUT/page.png"
ok "page without a token"
stop_daemon "$PID" || true

printf 'browser-test-token-%s\n' "$RANDOM$RANDOM" > "$TMPD/token"
start_daemon page-token --threads 2 --api-token-file "$TMPD/token"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: image/png' \
  --data-binary @"$IMAGE" "$URL/v1/predict")
[ "$code" = 401 ] || fail "predict without the token answered $code, not 401"
# the second page drops a JPEG 2000 CR as a PACS stores it (read without transcoding)
DROP_IMAGE=$DATA/dicom-compressed/RG3_J2KR.dcm
run_page page-token "$OUT/page-token.png" "$(head -1 "$TMPD/token")"
ok "page with api_token_file, after typing the token"
stop_daemon "$PID" || true
echo "screenshots: $OUT/page.png $OUT/page-token.png"
