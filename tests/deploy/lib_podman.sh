# tests/deploy/lib_podman.sh - building and running Dockerfiles without a Docker engine,
# for test_image.sh and test_compose.sh. Source it after setting ROOT, BUILD (absolute)
# and PY; or run `bash lib_podman.sh run ...` (below) to start an image's process.
#
# Podman runs with its own storage under $BUILD/image-cache (nothing under /etc or
# /var/lib/containers is read or changed): the base image the Dockerfiles name
# (debian:bookworm-slim) is made with debootstrap from this machine's apt sources and
# `podman import`ed under that exact name, so nothing is ever pulled. Images are run
# from their exported filesystem with chroot --userspec (these sandboxes cannot start
# containers: no cgroup or rlimit privileges), inside namespaces made by the caller.

# `bash lib_podman.sh run ROOTFS UID:GID WORKDIR ENVFILE CMDFILE [VAR=VALUE...]`: exec the
# image's command as its USER with exactly its ENV (+ VAR=VALUE) in its WORKDIR. The
# process keeps this shell's PID (every step execs), so `... &` then `$!` is the program.
if [ "${BASH_SOURCE[0]}" = "$0" ] && [ "${1:-}" = run ]; then
  rootfs=$2 user=$3 workdir=$4
  mapfile -t envs <"$5"
  mapfile -t cmd <"$6"
  shift 6
  exec env -i "${envs[@]}" "$@" chroot --userspec="$user" --groups="${user#*:}" "$rootfs" \
    /bin/sh -c 'cd "$0" && exec "$@"' "$workdir" "${cmd[@]}"
fi

podman_setup() {
  CACHE=$BUILD/image-cache
  mkdir -p "$CACHE"
  [ "$(id -u)" -eq 0 ] || { echo "$0: needs root (debootstrap, chroot, unshare)" >&2; return 1; }
  local tool
  for tool in podman debootstrap unshare chroot curl; do
    command -v "$tool" >/dev/null || { echo "$0: '$tool' missing (bash deploy/install-deps.sh --test)" >&2; return 1; }
  done
  # overlay is fast but cannot sit on an overlay filesystem (CI in a container): vfs there.
  PODMAN_DRIVER=${CHEX_PODMAN_DRIVER:-}
  if [ -z "$PODMAN_DRIVER" ]; then
    case $(stat -f -c %T "$CACHE") in overlayfs|overlay) PODMAN_DRIVER=vfs ;; *) PODMAN_DRIVER=overlay ;; esac
  fi
  # Podman refuses a runroot longer than 50 characters, and its database remembers the
  # runroot and tmpdir: a short, stable path per cache folder.
  PODMAN_STATE=/tmp/chexd-podman-$(printf '%s' "$CACHE/$PODMAN_DRIVER" | sha256sum | cut -c1-12)
  mkdir -p "$PODMAN_STATE"
  # Our own minimal containers.conf: no system file decides how the tests run.
  cat >"$CACHE/containers.conf" <<'EOF'
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "crun"
[containers]
netns = "host"
EOF
  export CONTAINERS_CONF=$CACHE/containers.conf
}

pm() {
  podman --root "$CACHE/storage-$PODMAN_DRIVER" --runroot "$PODMAN_STATE/run" --tmpdir "$PODMAN_STATE/tmp" \
    --storage-driver "$PODMAN_DRIVER" --cgroup-manager cgroupfs --events-backend file "$@"
}

# The mirror serving SUITE in this machine's apt sources (deb822 *.sources or *.list).
apt_uri() {
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

# debian:bookworm-slim, made here (cached: tarball + image in our storage). $1: scratch dir.
podman_base() {
  local work=$1
  if pm image exists debian:bookworm-slim; then
    echo "image: base debian:bookworm-slim already in $CACHE/storage-$PODMAN_DRIVER"
    return 0
  fi
  local tarball=$CACHE/debian-bookworm-slim.tar
  if [ ! -s "$tarball" ]; then
    local mirror security rootfs keyring=()
    mirror=$(apt_uri bookworm | head -n 1)
    security=$(apt_uri bookworm-security | head -n 1)
    [ -n "$mirror" ] || { echo "$0: no apt source for bookworm in /etc/apt" >&2; return 1; }
    echo "image: debootstrap --variant=minbase bookworm from $mirror"
    rootfs=$work/base
    [ -r /usr/share/keyrings/debian-archive-keyring.gpg ] && keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
    debootstrap "${keyring[@]}" --variant=minbase bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
      { tail -n 30 "$work/debootstrap.log" >&2; return 1; }
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
    "$tarball" debian:bookworm-slim >"$work/import.log" 2>&1 || { cat "$work/import.log" >&2; return 1; }
  echo "image: imported debian:bookworm-slim ($(du -m "$tarball" | cut -f1) MB tar)"
}

# podman_build TAG CONTEXT DOCKERFILE LOG: the real `podman build`, keeping the cache small
# (the previous image of TAG is removed once replaced).
podman_build() {
  local tag=$1 ctx=$2 file=$3 log=$4 old new t0=$SECONDS
  old=$(pm image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
  if ! pm build --isolation chroot --network host --pull=never --format docker -t "$tag" -f "$file" "$ctx" \
       >"$log" 2>&1; then
    echo "$0: podman build $tag failed; last lines:" >&2
    tail -n 40 "$log" >&2
    return 1
  fi
  echo "image: podman build $tag in $((SECONDS - t0)) s"
  new=$(pm image inspect --format '{{.Id}}' "$tag")
  if [ -n "$old" ] && [ "$old" != "$new" ]; then pm rmi "$old" >/dev/null 2>&1 || true; fi
}

# podman_config TAG DIR: the image's config as files: config.json (podman inspect),
# env, cmd, hc (HEALTHCHECK argv), user, workdir.
podman_config() {
  local tag=$1 dir=$2
  mkdir -p "$dir"
  pm image inspect "$tag" >"$dir/config.json"
  "$PY" - "$dir" <<'EOF'
import json, os, sys
d = sys.argv[1]
image = json.load(open(os.path.join(d, "config.json")))[0]
c = image["Config"]
# The docker-format HEALTHCHECK is outside the OCI config in podman's inspect output.
hc = (image.get("Healthcheck") or c.get("Healthcheck") or {}).get("Test") or []
def put(name, lines):
    with open(os.path.join(d, name), "w") as f:
        f.write("".join(l + "\n" for l in lines))
put("env", c.get("Env") or [])
put("cmd", (c.get("Entrypoint") or []) + (c.get("Cmd") or []))
put("hc", hc[1:] if hc[:1] == ["CMD"] else (["/bin/sh", "-c", hc[1]] if hc[:1] == ["CMD-SHELL"] else []))
put("user", [c.get("User") or "0"])
put("workdir", [c.get("WorkingDir") or "/"])
EOF
}

# podman_rootfs TAG DIR: the image's filesystem, exported through a created container.
podman_rootfs() {
  local tag=$1 dir=$2 cid
  mkdir -p "$dir"
  cid=$(pm create --no-healthcheck "$tag")
  if ! pm export "$cid" | tar -x --numeric-owner -C "$dir"; then
    pm rm -f "$cid" >/dev/null 2>&1; return 1
  fi
  pm rm "$cid" >/dev/null
}

# resolve_user ROOTFS USER[:GROUP] -> UID:GID, names looked up in the image's own files.
resolve_user() {
  local rootfs=$1 spec=$2 u g
  num() { case $1 in ''|*[!0-9]*) awk -F: -v n="$1" '$1 == n { print $3 }' "$2" ;; *) echo "$1" ;; esac; }
  u=$(num "${spec%%:*}" "$rootfs/etc/passwd")
  if [ "$spec" != "${spec#*:}" ]; then g=$(num "${spec#*:}" "$rootfs/etc/group")
  else g=$(awk -F: -v n="$u" '$3 == n { print $4 }' "$rootfs/etc/passwd"); fi
  [ -n "$u" ] && [ -n "$g" ] || { echo "$0: cannot resolve USER '$spec' in the image" >&2; return 1; }
  echo "$u:$g"
}

# rootfs_mounts ROOTFS: what a container runtime gives every container (/proc, a few
# device nodes, a /tmp tmpfs). Only inside a private mount namespace (unshare -m).
rootfs_mounts() {
  local rootfs=$1 n
  mount -t proc proc "$rootfs/proc"
  for n in null zero full random urandom; do
    : >"$rootfs/dev/$n"; mount --bind "/dev/$n" "$rootfs/dev/$n"
  done
  mount -t tmpfs -o mode=1777 tmpfs "$rootfs/tmp"
}
