#!/usr/bin/env bash
# tests/deploy/test_service_files.sh - the service files say what chexd can do:
#  - deploy/systemd/chexd.service passes `systemd-analyze verify` and its offline
#    security exposure is <= 2.0; its config passes `chexd --check-config`;
#  - deploy/k8s/*.yaml: probes point at routes chexd answers 200 on, ports agree,
#    the HPA and Service target the Deployment, drain fits the grace period, the
#    non-root UID is the image's; chexd run with the Deployment's CHEXD_* settings and
#    serving 2 x max_batch concurrent 1024x1024 radiographs peaks (VmHWM) below the
#    memory request and the systemd MemoryHigh;
#  - deploy/docker-compose.yml: its chexd environment passes --check-config, Orthanc's
#    CHEXD_URL names the chexd service and port, the build contexts exist.
#   env: BIN, MODELS, PY (as given by tests/run_all.sh)
set -euo pipefail
self=$(readlink -f "${BASH_SOURCE[0]}")
cd "$(dirname "$self")/../.."
ROOT=$PWD
BIN=${BIN:-bin}; MODELS=${MODELS:-models}; PY=${PY:-/usr/bin/python3}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
case $MODELS in /*) ;; *) MODELS=$ROOT/$MODELS ;; esac
MODEL=$MODELS/chexnet-demo.safetensors
for f in "$BIN/chexd" "$MODEL"; do
  [ -e "$f" ] || { echo "test_service_files: $f missing (run make)" >&2; exit 1; }
done
command -v systemd-analyze >/dev/null || { echo "test_service_files: systemd-analyze missing (package systemd)" >&2; exit 1; }

tmp=$(mktemp -d)
chexd_pid=
cleanup() {
  [ -n "$chexd_pid" ] && kill "$chexd_pid" 2>/dev/null && wait "$chexd_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "test_service_files: FAIL: $*" >&2; exit 1; }

# ---- systemd ------------------------------------------------------------------------------
unit=deploy/systemd/chexd.service
# verify checks that ExecStart's binary exists: point it at the one just built.
sed "s#/opt/chexd/bin/chexd#$BIN/chexd#g" "$unit" >"$tmp/chexd.service"
systemd-analyze verify "$tmp/chexd.service" >"$tmp/verify.log" 2>&1 || { cat "$tmp/verify.log" >&2; fail "systemd-analyze verify"; }
[ ! -s "$tmp/verify.log" ] || { cat "$tmp/verify.log" >&2; fail "systemd-analyze verify printed warnings"; }
exposure=$(systemd-analyze security --offline=yes "$tmp/chexd.service" 2>/dev/null |
  sed -n 's/.*Overall exposure level for chexd.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || fail "no exposure level from systemd-analyze security --offline"
"$PY" -c "import sys; sys.exit(0 if float('$exposure') <= 2.0 else 1)" || fail "security exposure $exposure > 2.0"
for k in DynamicUser=yes ProtectSystem=strict NoNewPrivileges=yes MemoryMax= KillSignal=SIGTERM; do
  grep -q "^$k" "$unit" || fail "$unit lacks $k"
done
execstart=$(sed -n 's/^ExecStart=//p' "$unit")
conf=$(printf '%s\n' $execstart | sed -n '/^--config$/{n;p}')
[ "$conf" = /etc/chexd/chexd.json ] || fail "ExecStart does not use --config /etc/chexd/chexd.json"
"$BIN/chexd" --config deploy/systemd/chexd.json --check-config >/dev/null || fail "deploy/systemd/chexd.json rejected"
echo "systemd: verify clean, offline exposure $exposure, deploy/systemd/chexd.json valid"

# ---- k8s + compose: static agreement --------------------------------------------------------
"$PY" - "$tmp" <<'EOF'
import json, os, sys
import yaml
tmp = sys.argv[1]
def load(p):
    return [d for d in yaml.safe_load_all(open(p)) if d]
docs = {}
for name in ("deployment", "service", "hpa", "pdb"):
    for d in load(f"deploy/k8s/{name}.yaml"):
        docs[d["kind"]] = d
kust = load("deploy/k8s/kustomization.yaml")[0]
for r in kust["resources"]:
    assert os.path.exists(os.path.join("deploy/k8s", r)), r
dep, svc, hpa, pdb = docs["Deployment"], docs["Service"], docs["HorizontalPodAutoscaler"], docs["PodDisruptionBudget"]
pod = dep["spec"]["template"]
labels = pod["metadata"]["labels"]
assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items(), "Deployment selector"
assert svc["spec"]["selector"].items() <= labels.items(), "Service selector does not match the pods"
assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items(), "PDB selector"
t = hpa["spec"]["scaleTargetRef"]
assert (t["kind"], t["name"]) == ("Deployment", dep["metadata"]["name"]), "HPA target"
assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
c = pod["spec"]["containers"][0]
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
env = {e["name"]: e["value"] for e in c["env"]}
assert int(env["CHEXD_PORT"]) == ports["http"], "CHEXD_PORT vs containerPort"
assert env["CHEXD_LISTEN"] == "0.0.0.0"
sp = svc["spec"]["ports"][0]
assert sp["targetPort"] in ("http", ports["http"]), "Service targetPort"
probes = {}
for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
    p = c[kind]["httpGet"]
    assert p["port"] in ("http", ports["http"]), kind
    probes[kind] = p["path"]
assert probes["readinessProbe"] == "/readyz" and probes["livenessProbe"] == "/healthz", probes
sc = pod["spec"]["securityContext"]
assert sc["runAsNonRoot"] and sc["runAsUser"] == 10001, "pod must run as the image's USER 10001"
res = c["resources"]
assert "cpu" in res["requests"] and "memory" in res["requests"] and "memory" in res["limits"], res
cpu_limit = float(str(res["limits"]["cpu"]).rstrip("m")) / (1000 if str(res["limits"]["cpu"]).endswith("m") else 1)
assert int(env["CHEXD_THREADS"]) == int(cpu_limit), "CHEXD_THREADS must equal the CPU limit"
def mib(q):
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for u, f in units.items():
        if q.endswith(u):
            return float(q[:-2]) * f
    return float(q) / 2**20
grace = pod["spec"]["terminationGracePeriodSeconds"]
prestop = float(c["lifecycle"]["preStop"]["exec"]["command"][-1])
drain = int(env.get("CHEXD_SHUTDOWN_TIMEOUT_MS", "10000")) / 1000
assert prestop + drain < grace, f"preStop {prestop} s + drain {drain} s must fit terminationGracePeriodSeconds {grace}"
with open(os.path.join(tmp, "k8s.env"), "w") as f:
    for k, v in env.items():
        if k.startswith("CHEXD_") and k not in ("CHEXD_MODEL", "CHEXD_API_TOKEN_FILE", "CHEXD_PORT", "CHEXD_LISTEN"):
            f.write(f"{k}={v}\n")
with open(os.path.join(tmp, "k8s.mem"), "w") as f:
    f.write(f"{mib(res['requests']['memory'])} {mib(res['limits']['memory'])}\n")
with open(os.path.join(tmp, "k8s.probes"), "w") as f:
    f.write("\n".join(sorted(set(probes.values()))) + "\n")

comp = yaml.safe_load(open("deploy/docker-compose.yml"))
s = comp["services"]
ch, orth = s["chexd"], s["orthanc"]
assert os.path.exists(os.path.join("deploy", ch["build"]["context"], ch["build"].get("dockerfile", "Dockerfile")))
assert os.path.exists(os.path.join("deploy", orth["build"]["context"], "Dockerfile"))
from urllib.parse import urlsplit
u = urlsplit(orth["environment"]["CHEXD_URL"])
assert u.hostname == "chexd" and u.port == int(ch["environment"]["CHEXD_PORT"]) and u.path == "/v1/predict", u
assert orth["depends_on"]["chexd"]["condition"] == "service_healthy"
assert ":?" in orth["environment"]["ORTHANC_ADMIN_PASSWORD"], "compose must require ORTHANC_ADMIN_PASSWORD"
with open(os.path.join(tmp, "compose.env"), "w") as f:
    for k, v in ch["environment"].items():
        if k != "CHEXD_MODEL":
            f.write(f"{k}={v}\n")
print(f"k8s: selectors, ports, probes {sorted(set(probes.values()))}, HPA target, drain {prestop:.0f}+{drain:.0f} s < grace {grace} s agree; "
      f"compose: Orthanc -> {orth['environment']['CHEXD_URL']}")
EOF
mapfile -t cenv <"$tmp/compose.env"
env "${cenv[@]}" "$BIN/chexd" --model "$MODEL" --check-config >/dev/null || fail "compose chexd environment rejected by --check-config"

# ---- measured memory with the Deployment's settings -------------------------------------------
mapfile -t kenv <"$tmp/k8s.env"
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
env "${kenv[@]}" "$BIN/chexd" --listen 127.0.0.1 --port "$port" --model "$MODEL" >"$tmp/chexd.log" 2>&1 &
chexd_pid=$!
for _ in $(seq 1 240); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && break
  kill -0 "$chexd_pid" 2>/dev/null || { cat "$tmp/chexd.log" >&2; fail "chexd with the Deployment's settings exited"; }
  sleep 0.25
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] ||
  { cat "$tmp/chexd.log" >&2; fail "chexd with the Deployment's settings not ready after 60 s"; }
while read -r path; do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port$path")" = 200 ] || fail "probe path $path is not 200"
done <"$tmp/k8s.probes"
batch=$(sed -n 's/^CHEXD_MAX_BATCH=//p' "$tmp/k8s.env")
n=$((2 * batch))
for i in $(seq 1 "$n"); do
  curl -s -o "$tmp/r$i.json" -w '%{http_code}\n' -H 'Content-Type: image/png' \
    --data-binary @tests/data/00000002_000.png "http://127.0.0.1:$port/v1/predict" >"$tmp/c$i" &
done
wait_ok=0
for _ in $(seq 1 600); do
  [ "$(cat "$tmp"/c* 2>/dev/null | grep -c '^200$')" -eq "$n" ] && { wait_ok=1; break; }
  sleep 0.1
done
[ $wait_ok -eq 1 ] || fail "not every one of $n concurrent requests got 200: $(cat "$tmp"/c* | sort | uniq -c | tr '\n' ' ')"
hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$chexd_pid/status")
kill -TERM "$chexd_pid"; wait "$chexd_pid" || fail "chexd exited non-zero on SIGTERM"; chexd_pid=
read -r req lim <"$tmp/k8s.mem"
high=$(sed -n 's/^MemoryHigh=\([0-9]*\)M$/\1/p' "$unit")
"$PY" - "$hwm" "$req" "$lim" "$high" "$n" <<'EOF'
import sys
hwm_mib = int(sys.argv[1]) / 1024
req, lim, high, n = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
print(f"memory: peak RSS (VmHWM) {hwm_mib:.0f} MiB serving {n} concurrent 1024x1024 PNGs with the Deployment's "
      f"settings; k8s request {req:.0f} Mi / limit {lim:.0f} Mi, systemd MemoryHigh {high:.0f} M")
assert hwm_mib <= req, f"peak RSS {hwm_mib:.0f} MiB exceeds the memory request {req:.0f} Mi"
assert hwm_mib <= high, f"peak RSS {hwm_mib:.0f} MiB exceeds MemoryHigh {high:.0f} M"
EOF
echo "service files: ok"
