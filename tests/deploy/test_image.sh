#!/usr/bin/env bash
# tests/deploy/test_image.sh - builds the real Dockerfile without a Docker engine and
# runs the image it makes.
#  1. the base named by the Dockerfile's FROM (debian:bookworm-slim) is made locally
#     with debootstrap from the mirror in this machine's own apt sources and
#     `podman import`ed under that exact name (cached under $BUILD/image-cache);
#  2. `podman build --isolation chroot --network host --pull=never --format docker`;
#  3. the image's filesystem is exported (podman create + export) and its ENTRYPOINT
#     started with chroot --userspec as the image's USER, with the image's ENV, inside
#     a private network and mount namespace (so 0.0.0.0:8080 is the image's own default
#     and touches nothing outside); a radiograph is POSTed, `chex classify` in the image
#     must agree, the HEALTHCHECK command must pass (and fail once chexd is stopped),
#     and SIGTERM must stop chexd cleanly;
#  4. prints the image size.
# Podman runs with its own storage under $BUILD/image-cache (nothing under /etc or
# /var/lib/containers is read or changed). Needs root (debootstrap, chroot, unshare).
#   env: BUILD (default build), PY; CHEX_PODMAN_DRIVER=overlay|vfs to force a driver.
set -euo pipefail

# ---- step 3, inside `unshare -m -n`: run the exported image --------------------------
if [ "${1:-}" = --in-namespace ]; then
  rootfs=$2 user=$3 workdir=$4 envfile=$5 cmdfile=$6 hcfile=$7 png=$8 py=$9
  port=$(sed -n 's/^CHEXD_PORT=//p' "$envfile"); port=${port:-8080}
  ip link set lo up
  # What a container runtime gives every container: /proc, a few device nodes, a /tmp.
  mount -t proc proc "$rootfs/proc"
  for n in null zero full random urandom; do
    : >"$rootfs/dev/$n"; mount --bind "/dev/$n" "$rootfs/dev/$n"
  done
  mount -t tmpfs -o mode=1777 tmpfs "$rootfs/tmp"
  cp "$png" "$rootfs/tmp/xray.png"
  mapfile -t envs <"$envfile"
  mapfile -t cmd <"$cmdfile"
  in_image() { # runs a command in the image as its USER with its ENV and WORKDIR
    env -i "${envs[@]}" chroot --userspec="$user" --groups="${user#*:}" "$rootfs" \
      /bin/sh -c 'cd "$0" && exec "$@"' "$workdir" "$@"
  }
  log=$(mktemp)
  # A simple command, so that $! is chexd itself (env, chroot and sh all exec).
  env -i "${envs[@]}" chroot --userspec="$user" --groups="${user#*:}" "$rootfs" \
    /bin/sh -c 'cd "$0" && exec "$@"' "$workdir" "${cmd[@]}" >"$log" 2>&1 &
  pid=$!
  trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -f "$log"' EXIT
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
  "$py" - "$body" "$cli" <<'EOF'
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
  mapfile -t hc <"$hcfile"
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

self=$(readlink -f "${BASH_SOURCE[0]}")
cd "$(dirname "$self")/../.."
ROOT=$PWD
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
PY=${PY:-/usr/bin/python3}
IMAGE=chexd:test
CACHE=$BUILD/image-cache
mkdir -p "$CACHE"
[ "$(id -u)" -eq 0 ] || { echo "test_image: needs root (debootstrap, chroot, unshare)" >&2; exit 1; }
for tool in podman debootstrap unshare chroot curl; do
  command -v "$tool" >/dev/null || { echo "test_image: '$tool' missing (bash deploy/install-deps.sh --test)" >&2; exit 1; }
done

# Every FROM that is not a stage name must be the base we make here.
base=$(awk 'toupper($1) == "FROM" { print $2 }' Dockerfile | sort -u)
[ "$base" = debian:bookworm-slim ] || { echo "test_image: Dockerfile bases are '$base', expected debian:bookworm-slim" >&2; exit 1; }

# overlay is fast but cannot sit on an overlay filesystem (CI in a container): vfs there.
driver=${CHEX_PODMAN_DRIVER:-}
if [ -z "$driver" ]; then
  case $(stat -f -c %T "$CACHE") in overlayfs|overlay) driver=vfs ;; *) driver=overlay ;; esac
fi
# Minimal containers.conf of our own: no system file decides how this test runs.
conf=$CACHE/containers.conf
cat >"$conf" <<EOF
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "crun"
[containers]
netns = "host"
EOF
export CONTAINERS_CONF=$conf
# Podman refuses a runroot longer than 50 characters, and its database remembers the
# runroot and tmpdir: a short, stable path per cache folder.
state=/tmp/chexd-podman-$(printf '%s' "$CACHE/$driver" | sha256sum | cut -c1-12)
mkdir -p "$state"
pm() {
  podman --root "$CACHE/storage-$driver" --runroot "$state/run" --tmpdir "$state/tmp" \
    --storage-driver "$driver" --cgroup-manager cgroupfs --events-backend file "$@"
}

tmp=$(mktemp -d "$CACHE/run.XXXXXX")
cid=
cleanup() {
  [ -n "$cid" ] && pm rm -f "$cid" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT

# ---- 1. base image ------------------------------------------------------------------
# The mirrors come from this machine's apt sources (deb822 *.sources or sources.list).
apt_uri() { # suite -> first URI serving it
  local suite=$1 f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] || continue
    awk -v want="$suite" '
      function flush() { if (deb && enabled && hit && uri != "" && !done) { print uri; done = 1 }
                         deb = 0; hit = 0; uri = ""; enabled = 1 }
      BEGIN { enabled = 1 }
      /^[[:space:]]*$/ { flush(); next }
      /^#/ { next }
      tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
      tolower($1) == "uris:" { uri = $2 }
      tolower($1) == "enabled:" { enabled = (tolower($2) != "no") }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == want) hit = 1 }
      END { flush() }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -e "$f" ] || continue
    awk -v want="$suite" '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                                        if ($(i + 1) == want) print $i }' "$f"
  done
}
if pm image exists debian:bookworm-slim; then
  echo "image: base debian:bookworm-slim already in $CACHE/storage-$driver"
else
  tarball=$CACHE/debian-bookworm-slim.tar
  if [ ! -s "$tarball" ]; then
    mirror=$(apt_uri bookworm | head -n 1)
    security=$(apt_uri bookworm-security | head -n 1)
    [ -n "$mirror" ] || { echo "test_image: no apt source for bookworm in /etc/apt" >&2; exit 1; }
    echo "image: debootstrap --variant=minbase bookworm from $mirror"
    rootfs=$tmp/base
    keyring=()
    [ -r /usr/share/keyrings/debian-archive-keyring.gpg ] && keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
    debootstrap "${keyring[@]}" --variant=minbase bookworm "$rootfs" "$mirror" >"$tmp/debootstrap.log" 2>&1 ||
      { tail -n 30 "$tmp/debootstrap.log" >&2; exit 1; }
    # What the official slim image does: no docs/man/locales, apt sources in deb822,
    # downloaded packages not kept.
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$rootfs"/usr/share/{man,groff,info,lintian,linda,locale}/*
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/*
    rm -f "$rootfs/etc/apt/sources.list"
    {
      printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror"
      [ -z "$security" ] ||
        printf '\nTypes: deb\nURIs: %s\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$security"
    } >"$rootfs/etc/apt/sources.list.d/debian.sources"
    tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  pm import --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$tarball" debian:bookworm-slim >"$tmp/import.log" 2>&1 || { cat "$tmp/import.log" >&2; exit 1; }
  echo "image: imported debian:bookworm-slim ($(du -m "$tarball" | cut -f1) MB tar)"
fi

# ---- 2. build -----------------------------------------------------------------------
old=$(pm image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
t0=$SECONDS
if ! pm build --isolation chroot --network host --pull=never --format docker -t "$IMAGE" -f Dockerfile . \
     >"$tmp/build.log" 2>&1; then
  echo "test_image: podman build failed; last lines:" >&2
  tail -n 40 "$tmp/build.log" >&2; exit 1
fi
echo "image: podman build $IMAGE in $((SECONDS - t0)) s"
new=$(pm image inspect --format '{{.Id}}' "$IMAGE")
if [ -n "$old" ] && [ "$old" != "$new" ]; then pm rmi "$old" >/dev/null 2>&1 || true; fi

# ---- what the Dockerfile declares ---------------------------------------------------
pm image inspect "$IMAGE" >"$tmp/config.json"
"$PY" - "$tmp" <<'EOF'
import json, os, sys
tmp = sys.argv[1]
image = json.load(open(os.path.join(tmp, "config.json")))[0]
c = image["Config"]
# The docker-format HEALTHCHECK is outside the OCI config in podman's inspect output.
c["Healthcheck"] = image.get("Healthcheck") or c.get("Healthcheck")
def need(cond, what):
    if not cond:
        sys.exit(f"test_image: image config: {what}: {json.dumps(c)}")
user = c.get("User") or ""
need(user not in ("", "0", "root") and not user.startswith("0:") and not user.startswith("root"), "USER must be non-root")
env = dict(e.split("=", 1) for e in c.get("Env") or [])
need(env.get("CHEXD_LISTEN") == "0.0.0.0", "ENV CHEXD_LISTEN=0.0.0.0")
need("8080/tcp" in (c.get("ExposedPorts") or {}), "EXPOSE 8080")
need("/models" in (c.get("Volumes") or {}), "VOLUME /models")
need(c.get("StopSignal") in ("SIGTERM", "15", "TERM"), "STOPSIGNAL SIGTERM")
hc = (c.get("Healthcheck") or {}).get("Test") or []
need(len(hc) >= 2 and hc[0] in ("CMD", "CMD-SHELL") and "/healthz" in " ".join(hc), "HEALTHCHECK on /healthz")
cmd = (c.get("Entrypoint") or []) + (c.get("Cmd") or [])
need(cmd, "ENTRYPOINT/CMD")
with open(os.path.join(tmp, "env"), "w") as f:
    f.write("".join(e + "\n" for e in c["Env"]))
with open(os.path.join(tmp, "cmd"), "w") as f:
    f.write("".join(a + "\n" for a in cmd))
with open(os.path.join(tmp, "hc"), "w") as f:
    args = hc[1:] if hc[0] == "CMD" else ["/bin/sh", "-c", hc[1]]
    f.write("".join(a + "\n" for a in args))
with open(os.path.join(tmp, "user"), "w") as f:
    f.write(user + "\n")
with open(os.path.join(tmp, "workdir"), "w") as f:
    f.write((c.get("WorkingDir") or "/") + "\n")
print(f"image: USER {user}, ENTRYPOINT {' '.join(cmd)}, EXPOSE 8080, VOLUME /models, STOPSIGNAL SIGTERM, HEALTHCHECK on /healthz")
EOF

# ---- 3. export and run ----------------------------------------------------------------
rootfs=$tmp/rootfs
mkdir -p "$rootfs"
cid=$(pm create --no-healthcheck "$IMAGE")
pm export "$cid" | tar -x --numeric-owner -C "$rootfs"
pm rm "$cid" >/dev/null; cid=
user=$(cat "$tmp/user")
resolve() { # name-or-number file -> number
  case $1 in ''|*[!0-9]*) awk -F: -v n="$1" '$1 == n { print $3 }' "$2" ;; *) echo "$1" ;; esac
}
u=$(resolve "${user%%:*}" "$rootfs/etc/passwd")
if [ "$user" != "${user#*:}" ]; then g=$(resolve "${user#*:}" "$rootfs/etc/group")
else g=$(awk -F: -v n="$u" '$3 == n { print $4 }' "$rootfs/etc/passwd"); fi
[ -n "$u" ] && [ -n "$g" ] && [ "$u" != 0 ] || { echo "test_image: cannot resolve USER '$user'" >&2; exit 1; }
for t in gcc cc make; do
  [ ! -e "$rootfs/usr/bin/$t" ] || { echo "test_image: runtime image contains /usr/bin/$t" >&2; exit 1; }
done
# Own PID namespace too: whatever happens, nothing started inside outlives the test.
unshare -m -n -p --kill-child --propagation private bash "$self" --in-namespace \
  "$rootfs" "$u:$g" "$(cat "$tmp/workdir")" "$tmp/env" "$tmp/cmd" "$tmp/hc" \
  "$ROOT/tests/data/00000001_000.png" "$PY"

# ---- 4. size ---------------------------------------------------------------------------
size=$(pm image inspect --format '{{.Size}}' "$IMAGE")
bsize=$(pm image inspect --format '{{.Size}}' debian:bookworm-slim)
echo "image: $IMAGE is $((size / 1000000)) MB (base debian:bookworm-slim $((bsize / 1000000)) MB, storage driver $driver)"
