#!/usr/bin/env bash
# tests/deploy/test_image.sh - builds the real Dockerfile without a Docker engine and
# runs the image it makes.
#  1. the base named by the Dockerfile's FROM (debian:bookworm-slim) is made locally
#     with debootstrap from the mirror in this machine's own apt sources and
#     `podman import`ed under that exact name (cached under $BUILD/image-cache);
#  2. `podman build --isolation chroot --network host --pull=never --format docker`;
#  3. the image's filesystem is exported (podman create + export) and its ENTRYPOINT
#     started with chroot --userspec as the image's USER, with the image's ENV, inside
#     private mount, network and PID namespaces (so 0.0.0.0:8080 is the image's own
#     default and touches nothing outside); a radiograph is POSTed, `chex classify` in
#     the image must agree, the HEALTHCHECK command must pass (and fail once chexd is
#     stopped), and SIGTERM must stop chexd cleanly;
#  4. prints the image size.
# Needs root (debootstrap, chroot, unshare). Helpers: tests/deploy/lib_podman.sh.
#   env: BUILD (default build), PY; CHEX_PODMAN_DRIVER=overlay|vfs to force a driver.
set -euo pipefail
self=$(readlink -f "${BASH_SOURCE[0]}")
here=$(dirname "$self")
lib=$here/lib_podman.sh

# ---- step 3, inside `unshare -m -n -p`: run the exported image -------------------------
if [ "${1:-}" = --in-namespace ]; then
  rootfs=$2 cfg=$3 user=$4 png=$5 PY=$6
  # shellcheck source=lib_podman.sh
  . "$lib"
  port=$(sed -n 's/^CHEXD_PORT=//p' "$cfg/env"); port=${port:-8080}
  ip link set lo up
  rootfs_mounts "$rootfs"
  cp "$png" "$rootfs/tmp/xray.png"
  workdir=$(cat "$cfg/workdir")
  log=$(mktemp)
  bash "$lib" run "$rootfs" "$user" "$workdir" "$cfg/env" "$cfg/cmd" >"$log" 2>&1 &
  pid=$!
  trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -f "$log"' EXIT
  in_image() { # a command in the image as its USER with its ENV (foreground)
    printf '%s\n' "$@" >"$cfg/argv"
    bash "$lib" run "$rootfs" "$user" "$workdir" "$cfg/env" "$cfg/argv"
  }
  ok=0
  for _ in $(seq 1 240); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null; then ok=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if [ $ok -ne 1 ]; then
    echo "image: chexd did not become healthy on 127.0.0.1:$port; its output:" >&2
    cat "$log" >&2; exit 1
  fi
  ready=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")
  [ "$ready" = 200 ] || { echo "image: /readyz answered $ready" >&2; cat "$log" >&2; exit 1; }
  body=$(mktemp)
  code=$(curl -s -o "$body" -w '%{http_code}' -H 'Content-Type: image/png' \
    --data-binary @"$png" "http://127.0.0.1:$port/v1/predict")
  if [ "$code" != 200 ]; then
    echo "image: POST /v1/predict answered $code:" >&2; cat "$body" >&2; cat "$log" >&2; exit 1
  fi
  cli=$(in_image chex classify /tmp/xray.png) || { echo "image: chex classify failed" >&2; exit 1; }
  "$PY" - "$body" "$cli" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
preds = d["predictions"]
assert len(preds) == 14, f"expected 14 predictions, got {len(preds)}"
for p in preds:
    assert isinstance(p["label"], str) and p["label"], p
    assert 0.0 <= p["probability"] <= 1.0, p
assert d["model"]["demo"] is True, d["model"]
c = json.loads(sys.argv[2].strip().splitlines()[0])
a = {p["label"]: p["probability"] for p in preds}
b = {p["label"]: p["probability"] for p in c["predictions"]}
assert a.keys() == b.keys(), (sorted(a), sorted(b))
worst = max(abs(a[k] - b[k]) for k in a)
assert worst <= 1e-6, f"daemon and chex classify differ by {worst}"
top = max(preds, key=lambda p: p["probability"])
print(f"image: POST /v1/predict 200, 14 predictions (top {top['label']} {top['probability']:.4f}), "
      f"chex classify in the image agrees (max diff {worst:.1e})")
EOF
  rm -f "$body"
  mapfile -t hc <"$cfg/hc"
  in_image "${hc[@]}" || { echo "image: HEALTHCHECK failed against a healthy chexd" >&2; exit 1; }
  echo "image: HEALTHCHECK passes while chexd serves"
  t0=$(date +%s%N)
  kill -TERM "$pid"
  rc=0; wait "$pid" || rc=$?
  t1=$(date +%s%N)
  trap 'rm -f "$log"' EXIT
  if [ $rc -ne 0 ]; then
    echo "image: chexd exited $rc on SIGTERM; its output:" >&2; cat "$log" >&2; exit 1
  fi
  echo "image: SIGTERM -> chexd exited 0 in $(( (t1 - t0) / 1000000 )) ms"
  if in_image "${hc[@]}" 2>/dev/null; then
    echo "image: HEALTHCHECK passed with chexd stopped" >&2; exit 1
  fi
  echo "image: HEALTHCHECK fails once chexd is stopped"
  exit 0
fi

cd "$here/../.."
ROOT=$PWD
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
PY=${PY:-/usr/bin/python3}
IMAGE=chexd:test
# shellcheck source=lib_podman.sh
. "$lib"
podman_setup

# Every FROM must be the base made here (stage names aside).
base=$(awk 'toupper($1) == "FROM" { print $2 }' Dockerfile | sort -u)
[ "$base" = debian:bookworm-slim ] || { echo "test_image: Dockerfile bases are '$base', expected debian:bookworm-slim" >&2; exit 1; }

tmp=$(mktemp -d "$CACHE/run.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

podman_base "$tmp"                                              # 1
podman_build "$IMAGE" . Dockerfile "$tmp/build.log"             # 2

# ---- what the Dockerfile declares ---------------------------------------------------
podman_config "$IMAGE" "$tmp/cfg"
"$PY" - "$tmp/cfg/config.json" <<'EOF'
import json, sys
image = json.load(open(sys.argv[1]))[0]
c = image["Config"]
c["Healthcheck"] = image.get("Healthcheck") or c.get("Healthcheck")
def need(cond, what):
    if not cond:
        sys.exit(f"test_image: image config: {what}: {json.dumps(c)}")
user = c.get("User") or ""
need(user not in ("", "0", "root") and not user.startswith(("0:", "root")), "USER must be non-root")
env = dict(e.split("=", 1) for e in c.get("Env") or [])
need(env.get("CHEXD_LISTEN") == "0.0.0.0", "ENV CHEXD_LISTEN=0.0.0.0")
need("8080/tcp" in (c.get("ExposedPorts") or {}), "EXPOSE 8080")
need("/models" in (c.get("Volumes") or {}), "VOLUME /models")
need(c.get("StopSignal") in ("SIGTERM", "15", "TERM"), "STOPSIGNAL SIGTERM")
hc = (c.get("Healthcheck") or {}).get("Test") or []
need(len(hc) >= 2 and hc[0] in ("CMD", "CMD-SHELL") and "/healthz" in " ".join(hc), "HEALTHCHECK on /healthz")
cmd = (c.get("Entrypoint") or []) + (c.get("Cmd") or [])
need(cmd, "ENTRYPOINT/CMD")
print(f"image: USER {user}, ENTRYPOINT {' '.join(cmd)}, EXPOSE 8080, VOLUME /models, STOPSIGNAL SIGTERM, HEALTHCHECK on /healthz")
EOF

# ---- 3. export and run ----------------------------------------------------------------
rootfs=$tmp/rootfs
podman_rootfs "$IMAGE" "$rootfs"
user=$(resolve_user "$rootfs" "$(cat "$tmp/cfg/user")")
[ "${user%%:*}" != 0 ] || { echo "test_image: image runs as root" >&2; exit 1; }
for t in gcc cc make; do
  [ ! -e "$rootfs/usr/bin/$t" ] || { echo "test_image: runtime image contains /usr/bin/$t" >&2; exit 1; }
done
# Own PID namespace too: whatever happens, nothing started inside outlives the test.
unshare -m -n -p --kill-child --propagation private bash "$self" --in-namespace \
  "$rootfs" "$tmp/cfg" "$user" "$ROOT/tests/data/00000001_000.png" "$PY"

# ---- 4. size ---------------------------------------------------------------------------
size=$(pm image inspect --format '{{.Size}}' "$IMAGE")
bsize=$(pm image inspect --format '{{.Size}}' debian:bookworm-slim)
echo "image: $IMAGE is $((size / 1000000)) MB (base debian:bookworm-slim $((bsize / 1000000)) MB, storage driver $PODMAN_DRIVER)"
