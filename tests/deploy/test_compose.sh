#!/usr/bin/env bash
# tests/deploy/test_compose.sh - deploy/docker-compose.yml brought up without a Docker
# engine: both services' images are built from their Dockerfiles with podman (the
# chexd image and deploy/orthanc's Debian Orthanc + orthanc-python image), exported,
# and started from their filesystems as compose would run them: the image's USER,
# ENV + the service's `environment`, its `read_only` root, `tmpfs` and bind volumes,
# service names resolving to each other (one private network namespace, own PID
# namespace), the compose `secrets` (made by deploy/make-secrets.sh --for-containers)
# bind-mounted read-only at /run/secrets/NAME. chexd serves HTTPS only with a token;
# Orthanc is started once the chexd service's own compose healthcheck (HTTPS) passes
# (depends_on: service_healthy), and its plugin checks chexd's certificate against the CA. A DX made from a real radiograph is C-STOREd
# to Orthanc's DICOM port; the plugin in the Orthanc image must store chexd's answer,
# equal to `chex classify` run inside the chexd image on the same file.
# Needs root. Helpers: tests/deploy/lib_podman.sh.   env: BUILD, PY
set -euo pipefail
self=$(readlink -f "${BASH_SOURCE[0]}")
here=$(dirname "$self")
lib=$here/lib_podman.sh

if [ "${1:-}" = --in-namespace ]; then
  tmp=$2 PY=$3 ROOT=$4
  # shellcheck source=lib_podman.sh
  . "$lib"
  ip link set lo up
  fail() { echo "test_compose: FAIL: $*" >&2; exit 1; }
  declare -A pid
  stop_all() {
    local s
    for s in "${!pid[@]}"; do kill "${pid[$s]}" 2>/dev/null; wait "${pid[$s]}" 2>/dev/null; done
  }
  trap 'rc=$?; [ $rc -eq 0 ] || for s in chexd orthanc; do echo "--- $s log (tail)" >&2; tail -n 25 "$tmp/$s.log" >&2; done; stop_all' EXIT
  prepare() { # SERVICE: the mounts compose would make
    local s=$1 r=$tmp/$1/rootfs spec src dst mode
    if [ "$(cat "$tmp/$s/read_only")" = true ]; then
      mount --bind "$r" "$r"
    fi
    rootfs_mounts "$r"
    while read -r spec; do
      [ -n "$spec" ] || continue
      mount -t tmpfs -o mode=1777 tmpfs "$r$spec"
    done <"$tmp/$s/tmpfs"
    while IFS=: read -r src dst mode; do
      [ -n "$src" ] || continue
      mkdir -p "$r$dst"
      case $src in
        ./*|../*|/*)  # bind: an empty stand-in folder, never the repo's own files
          mkdir -p "$tmp/$s/bind$dst"; mount --bind "$tmp/$s/bind$dst" "$r$dst"
          [ "$mode" = ro ] && mount -o remount,bind,ro "$r$dst" ;;
        *) ;;         # named volume: the image's folder, as a fresh volume would be
      esac
    done <"$tmp/$s/volumes"
    while IFS=: read -r name src; do   # compose secrets: read-only bind mounts
      [ -n "$name" ] || continue
      mkdir -p "$r/run/secrets"
      [ -e "$r/run/secrets/$name" ] || : >"$r/run/secrets/$name"
      mount --bind "$tmp/secrets/$src" "$r/run/secrets/$name"
      mount -o remount,bind,ro "$r/run/secrets/$name"
    done <"$tmp/$s/secrets"
    if [ "$(cat "$tmp/$s/read_only")" = true ]; then
      mount -o remount,bind,ro "$r"
      findmnt -n -o OPTIONS --mountpoint "$r" | grep -qE '(^|,)ro(,|$)' || fail "$s: root not read-only"
    fi
  }
  start() { # SERVICE
    local s=$1
    bash "$lib" run "$tmp/$s/rootfs" "$(cat "$tmp/$s/uidgid")" "$(cat "$tmp/$s/workdir")" \
      "$tmp/$s/env" "$tmp/$s/cmd" >"$tmp/$s.log" 2>&1 &
    pid[$s]=$!
  }
  in_service() { # SERVICE ARGV... : a command in the service's image, as its USER
    local s=$1; shift
    printf '%s\n' "$@" >"$tmp/$s/argv"
    bash "$lib" run "$tmp/$s/rootfs" "$(cat "$tmp/$s/uidgid")" "$(cat "$tmp/$s/workdir")" \
      "$tmp/$s/env" "$tmp/$s/argv"
  }
  prepare chexd
  prepare orthanc
  start chexd
  # depends_on: condition: service_healthy -> the chexd service's own healthcheck command.
  mapfile -t hc <"$tmp/chexd/healthcheck"
  healthy=0
  for _ in $(seq 1 240); do
    if in_service chexd "${hc[@]}" 2>/dev/null; then healthy=1; break; fi
    kill -0 "${pid[chexd]}" 2>/dev/null || fail "chexd exited at start"
    sleep 0.25
  done
  [ $healthy -eq 1 ] || fail "the chexd service's healthcheck never passed"
  echo "compose: chexd healthy by its compose healthcheck (read-only root filesystem)"
  start orthanc
  pw=$(sed -n 's/^ORTHANC_ADMIN_PASSWORD=//p' "$tmp/orthanc/env")
  orth() { curl -fsS -u "admin:$pw" "http://127.0.0.1:8042$1" "${@:2}"; }
  for _ in $(seq 1 240); do
    orth /system >/dev/null 2>&1 && break
    kill -0 "${pid[orthanc]}" 2>/dev/null || fail "Orthanc exited at start"
    sleep 0.25
  done
  orth /system >/dev/null || fail "Orthanc REST not up"
  [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8042/system)" = 401 ] || fail "Orthanc open without password"
  orth /chexd/status | grep -q '"Url": "https://chexd:8080/v1/predict"' || fail "plugin does not use CHEXD_URL"
  orth /chexd/status | grep -q '"CAFile": "/run/secrets/chexd_ca"' || fail "plugin does not use CHEXD_CA_FILE"
  echo "compose: Orthanc $(orth /system | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["Version"])') up as $(cat "$tmp/orthanc/uidgid") with the plugin -> https://chexd:8080/v1/predict (CA and token from compose secrets)"

  "$PY" "$ROOT/tests/deploy/make_dx.py" "$ROOT/tests/data/00000047_005.png" "$tmp/dx.dcm"
  storescu -aet MODALITY -aec ORTHANC 127.0.0.1 4242 "$tmp/dx.dcm" >"$tmp/storescu.log" 2>&1 ||
    fail "storescu: $(tail -n 3 "$tmp/storescu.log")"
  uid=$("$PY" -c 'import sys, pydicom; print(pydicom.dcmread(sys.argv[1]).SOPInstanceUID)' "$tmp/dx.dcm")
  id=$(orth /tools/lookup -X POST --data-binary "$uid" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)[0]["ID"])')
  st=
  for _ in $(seq 1 240); do
    st=$(orth "/instances/$id/metadata/chexd-status" 2>/dev/null || true)
    [ "$st" = ok ] && break
    case $st in failed*) break ;; esac
    sleep 0.25
  done
  [ "$st" = ok ] || fail "chexd-status '$st'"
  orth "/instances/$id/attachments/chexd/data" >"$tmp/stored.json"
  cp "$tmp/dx.dcm" "$tmp/chexd/rootfs/tmp/dx.dcm"
  in_service chexd chex classify /tmp/dx.dcm >"$tmp/cli.json" || fail "chex classify in the chexd image"
  "$PY" - "$tmp/stored.json" "$tmp/cli.json" <<'EOF'
import json, sys
a = json.load(open(sys.argv[1]))
b = json.loads(open(sys.argv[2]).read().splitlines()[0])
pa = {p["label"]: p["probability"] for p in a["predictions"]}
pb = {p["label"]: p["probability"] for p in b["predictions"]}
assert len(pa) == 14 and pa.keys() == pb.keys()
worst = max(abs(pa[k] - pb[k]) for k in pa)
assert worst <= 1e-6, worst
assert a["dicom"]["modality"] == "DX"
print(f"compose: DX C-STOREd to Orthanc -> chexd answer stored, = chex classify in the chexd image (max diff {worst:.1e})")
EOF
  # The image loads DICOMweb (STOW-RS forwarding of results): QIDO-RS finds the study.
  study=$("$PY" -c 'import sys, pydicom; print(pydicom.dcmread(sys.argv[1]).StudyInstanceUID)' "$tmp/dx.dcm")
  orth "/dicom-web/studies?StudyInstanceUID=$study" | grep -q "$study" || fail "DICOMweb (QIDO-RS) in the Orthanc image"
  echo "compose: the Orthanc image serves DICOMweb (QIDO-RS finds the stored study)"
  ! grep -q "Traceback\|EMPTY password" "$tmp/orthanc.log" || fail "errors in Orthanc's log"
  for s in orthanc chexd; do
    kill -TERM "${pid[$s]}"; rc=0; wait "${pid[$s]}" || rc=$?; unset "pid[$s]"
    [ $rc -eq 0 ] || fail "$s exited $rc on SIGTERM"
  done
  echo "compose: both services stopped cleanly on SIGTERM"
  exit 0
fi

cd "$here/../.."
ROOT=$PWD
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
PY=${PY:-/usr/bin/python3}
# shellcheck source=lib_podman.sh
. "$lib"
podman_setup
for tool in storescu ip; do
  command -v "$tool" >/dev/null || { echo "test_compose: '$tool' missing (bash deploy/install-deps.sh --test)" >&2; exit 1; }
done
tmp=$(mktemp -d "$CACHE/compose.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# The compose file, as compose reads it: build contexts, environment with ${...}
# expanded (a random ORTHANC_ADMIN_PASSWORD, as the operator must give one), tmpfs,
# volumes, read_only, the chexd healthcheck.
ORTHANC_ADMIN_PASSWORD=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n') \
"$PY" - deploy/docker-compose.yml "$tmp" <<'EOF'
import os, re, sys
import yaml
path, tmp = sys.argv[1], sys.argv[2]
comp = yaml.safe_load(open(path))
base = os.path.dirname(path)
def expand(v):
    def one(m):
        name, op, arg = m.group(1), m.group(2), m.group(3)
        val = os.environ.get(name, "")
        if op == ":?" and not val:
            sys.exit(f"compose: {name} must be set: {arg}")
        if op == ":-" and not val:
            return arg
        return val
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-?])([^}]*))?\}", one, str(v))
for name, s in comp["services"].items():
    d = os.path.join(tmp, name)
    os.makedirs(d)
    b = s["build"]
    ctx = os.path.normpath(os.path.join(base, b["context"]))
    with open(os.path.join(d, "build"), "w") as f:
        f.write(f"{ctx}\n{os.path.join(ctx, b.get('dockerfile', 'Dockerfile'))}\n{s['image'].split(':')[0]}:test\n")
    env = s.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    with open(os.path.join(d, "compose.env"), "w") as f:
        f.write("".join(f"{k}={expand(v)}\n" for k, v in env.items()))
    with open(os.path.join(d, "tmpfs"), "w") as f:
        t = s.get("tmpfs") or []
        f.write("".join(x + "\n" for x in ([t] if isinstance(t, str) else t)))
    with open(os.path.join(d, "volumes"), "w") as f:
        f.write("".join(v + ("" if v.count(":") == 2 else ":rw") + "\n" for v in s.get("volumes") or []))
    with open(os.path.join(d, "secrets"), "w") as f:
        top = comp.get("secrets") or {}
        f.write("".join(f"{n}:{os.path.basename(top[n]['file'])}\n" for n in s.get("secrets") or []))
    with open(os.path.join(d, "read_only"), "w") as f:
        f.write("true\n" if s.get("read_only") else "false\n")
    hc = (s.get("healthcheck") or {}).get("test") or []
    with open(os.path.join(d, "healthcheck"), "w") as f:
        args = hc[1:] if hc[:1] == ["CMD"] else (["/bin/sh", "-c", hc[1]] if hc[:1] == ["CMD-SHELL"] else [])
        f.write("".join(a + "\n" for a in args))
assert os.path.getsize(os.path.join(tmp, "chexd", "healthcheck")) > 0, "chexd service has no healthcheck"
EOF

# The secrets compose expects in deploy/secrets/, made the documented way (in $tmp).
bash deploy/make-secrets.sh --for-containers "$tmp/secrets" chexd localhost 127.0.0.1 >/dev/null
podman_base "$tmp"
for s in chexd orthanc; do
  { read -r ctx; read -r file; read -r tag; } <"$tmp/$s/build"
  podman_build "$tag" "$ctx" "$file" "$tmp/$s/build.log"
  podman_config "$tag" "$tmp/$s"
  podman_rootfs "$tag" "$tmp/$s/rootfs"
  resolve_user "$tmp/$s/rootfs" "$(cat "$tmp/$s/user")" >"$tmp/$s/uidgid"
  # Image ENV, then the service's environment (later wins with env -i).
  cat "$tmp/$s/env" "$tmp/$s/compose.env" >"$tmp/$s/env.all" && mv "$tmp/$s/env.all" "$tmp/$s/env"
  # Compose's network: every service name resolves (here: one shared loopback).
  printf '127.0.0.1\tlocalhost chexd orthanc\n::1\tlocalhost ip6-localhost\n' >"$tmp/$s/rootfs/etc/hosts"
  echo "compose: service $s = $tag ($(( $(pm image inspect --format '{{.Size}}' "$tag") / 1000000 )) MB), user $(cat "$tmp/$s/uidgid")"
done
unshare -m -n -p --kill-child --propagation private bash "$self" --in-namespace "$tmp" "$PY" "$ROOT"
