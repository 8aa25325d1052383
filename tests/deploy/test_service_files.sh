#!/usr/bin/env bash
# tests/deploy/test_service_files.sh - the service files say what chexd can do:
#  - deploy/systemd/chexd.service passes `systemd-analyze verify` and its offline
#    security exposure is <= 2.0; it runs as the chexd user, reloads with SIGHUP; its
#    chexd.json turns TLS and the token on from files in /etc/chexd, and passes
#    `chexd --check-config`;
#  - deploy/k8s/*.yaml: TLS and token from Secrets mounted as files (group-readable only),
#    HTTPS probes on the open routes /healthz and /readyz; ports agree, the HPA and
#    Service target the Deployment, drain fits the grace period, the non-root UID is the
#    image's; chexd run with the Deployment's CHEXD_* settings (TLS and token on, files
#    from deploy/make-secrets.sh) answers the probes' paths over HTTPS without a token,
#    refuses /v1/predict without it, and serving 2 x max_batch concurrent 1024x1024
#    radiographs peaks (VmHWM) below the memory request and the systemd MemoryHigh;
#  - deploy/k8s/kserve/inferenceservice.yaml: kserve-container running the image as is,
#    PROTOCOL v2, HTTPS probes on /v2/health/*, deploy/k8s's Secrets, memory_limit_mb under
#    the limit; chexd run with its settings passes the probes and answers v2 infer;
#  - deploy/docker-compose.yml: chexd with TLS and a token from compose secrets, Orthanc
#    with https:// CHEXD_URL naming the chexd service and port, the CA and the token;
#    chexd run with the service's environment (secrets from deploy/make-secrets.sh at
#    their /run/secrets paths' stand-ins) passes the service's own healthcheck command.
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
command -v openssl >/dev/null || { echo "test_service_files: openssl missing (package openssl)" >&2; exit 1; }

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
for k in User=chexd Group=chexd ProtectSystem=strict NoNewPrivileges=yes MemoryMax= KillSignal=SIGTERM \
         'ExecReload=/bin/kill -HUP $MAINPID'; do
  grep -qF "$k" "$unit" || fail "$unit lacks $k"
done
"$PY" - deploy/systemd/chexd.json <<'EOF' || fail "deploy/systemd/chexd.json must read TLS and the token from /etc/chexd"
import json, sys
c = json.load(open(sys.argv[1]))
assert c["tls_cert_file"].startswith("/etc/chexd/") and c["tls_key_file"].startswith("/etc/chexd/"), c
assert c["api_token_file"].startswith("/etc/chexd/"), c
EOF
# The unit's install steps give the secrets 0640 root:chexd in a 0750 folder.
for f in tls.crt tls.key token; do
  grep -q "install -m 640 -o root -g chexd .* /etc/chexd/$f\$" "$unit" || fail "$unit: no 0640 root:chexd install step for /etc/chexd/$f"
done
execstart=$(sed -n 's/^ExecStart=//p' "$unit")
conf=$(printf '%s\n' $execstart | sed -n '/^--config$/{n;p}')
[ "$conf" = /etc/chexd/chexd.json ] || fail "ExecStart does not use --config /etc/chexd/chexd.json"
bash deploy/make-secrets.sh "$tmp/secrets" chexd localhost 127.0.0.1 >/dev/null
sed -e "s#/etc/chexd/tls.crt#$tmp/secrets/chexd.crt#; s#/etc/chexd/tls.key#$tmp/secrets/chexd.key#" \
    -e "s#/etc/chexd/token#$tmp/secrets/token#" deploy/systemd/chexd.json >"$tmp/systemd.json"
"$BIN/chexd" --config "$tmp/systemd.json" --model "$MODEL" --check-config >/dev/null || fail "deploy/systemd/chexd.json rejected"
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
assert int(env["CHEXD_PORT"]) == ports["https"], "CHEXD_PORT vs containerPort"
assert env["CHEXD_LISTEN"] == "0.0.0.0"
sp = svc["spec"]["ports"][0]
assert sp["targetPort"] in ("https", ports["https"]), "Service targetPort"
probes = {}
for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
    p = c[kind]["httpGet"]
    assert p["port"] in ("https", ports["https"]), kind
    assert p.get("scheme") == "HTTPS", f"{kind} must use scheme HTTPS (TLS is on)"
    probes[kind] = p["path"]
# TLS and token: files from Secrets, group-readable only.
mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
vols = {v["name"]: v for v in pod["spec"]["volumes"]}
def secret_of(path):
    d = os.path.dirname(path)
    assert d in mounts and mounts[d].get("readOnly"), f"{path}: not on a read-only mount"
    v = vols[mounts[d]["name"]]
    assert "secret" in v and v["secret"].get("defaultMode") == 0o440, f"{path}: not from a Secret with defaultMode 0440"
    return v["secret"]["secretName"]
assert secret_of(env["CHEXD_TLS_CERT_FILE"]) == secret_of(env["CHEXD_TLS_KEY_FILE"]), "certificate and key from one TLS Secret"
assert os.path.basename(env["CHEXD_TLS_CERT_FILE"]) == "tls.crt" and os.path.basename(env["CHEXD_TLS_KEY_FILE"]) == "tls.key"
secret_of(env["CHEXD_API_TOKEN_FILE"])
assert pod["spec"]["securityContext"].get("fsGroup") == 10001, "fsGroup must let the pod's group read the Secrets"
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
        if k in ("CHEXD_TLS_CERT_FILE", "CHEXD_TLS_KEY_FILE", "CHEXD_API_TOKEN_FILE"):
            # the Secrets' files: stand-ins made by deploy/make-secrets.sh
            v = os.path.join(tmp, "secrets", {"tls.crt": "chexd.crt", "tls.key": "chexd.key"}.get(os.path.basename(v), "token"))
        if k.startswith("CHEXD_") and k not in ("CHEXD_MODEL", "CHEXD_PORT", "CHEXD_LISTEN"):
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
oe, ce = orth["environment"], ch["environment"]
u = urlsplit(oe["CHEXD_URL"])
assert u.scheme == "https", "Orthanc must reach chexd over https://"
assert u.hostname == "chexd" and u.port == int(ce["CHEXD_PORT"]) and u.path == "/v1/predict", u
assert orth["depends_on"]["chexd"]["condition"] == "service_healthy"
assert ":?" in oe["ORTHANC_ADMIN_PASSWORD"], "compose must require ORTHANC_ADMIN_PASSWORD"
# Secrets: each file path in the environment is /run/secrets/NAME of a secret the service has.
top = comp["secrets"]
def secret_file(service, path):
    assert path.startswith("/run/secrets/"), path
    name = path[len("/run/secrets/"):]
    assert name in service["secrets"], f"{name} not given to the service"
    return os.path.basename(top[name]["file"])
files = {k: secret_file(ch, ce[k]) for k in ("CHEXD_TLS_CERT_FILE", "CHEXD_TLS_KEY_FILE", "CHEXD_API_TOKEN_FILE")}
assert files == {"CHEXD_TLS_CERT_FILE": "chexd.crt", "CHEXD_TLS_KEY_FILE": "chexd.key", "CHEXD_API_TOKEN_FILE": "token"}, files
assert secret_file(orth, oe["CHEXD_CA_FILE"]) == "ca.pem" and secret_file(orth, oe["CHEXD_TOKEN_FILE"]) == "token"
assert all(os.path.dirname(s["file"]) == "./secrets" for s in top.values()), "secrets must come from deploy/secrets"
ignored = open(".dockerignore").read().split()
assert "deploy/secrets" in ignored, ".dockerignore must keep deploy/secrets out of the image build context"
hc = ch["healthcheck"]["test"]
assert hc[0] == "CMD" and "/readyz" in hc, hc
with open(os.path.join(tmp, "compose.env"), "w") as f:
    for k, v in ce.items():
        if k in files:
            v = os.path.join(tmp, "secrets", files[k])
        if k != "CHEXD_MODEL":
            f.write(f"{k}={v}\n")
with open(os.path.join(tmp, "compose.hc"), "w") as f:
    f.write("\n".join(hc[1:]) + "\n")
print(f"k8s: selectors, ports, probes {sorted(set(probes.values()))}, HPA target, drain {prestop:.0f}+{drain:.0f} s < grace {grace} s agree; "
      f"compose: Orthanc -> {orth['environment']['CHEXD_URL']}")
EOF
mapfile -t cenv <"$tmp/compose.env"
env "${cenv[@]}" "$BIN/chexd" --model "$MODEL" --check-config >/dev/null || fail "compose chexd environment rejected by --check-config"
# The compose chexd, with its own healthcheck command (the image's /opt/chexd/bin/chexd-probe
# is deploy/chexd-probe): healthy over TLS once ready.
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mapfile -t hc <"$tmp/compose.hc"
hc[0]=$ROOT/deploy/chexd-probe
env "${cenv[@]}" CHEXD_LISTEN=127.0.0.1 CHEXD_PORT="$port" "$BIN/chexd" --model "$MODEL" >"$tmp/compose-chexd.log" 2>&1 &
chexd_pid=$!
healthy=0
for _ in $(seq 1 120); do
  env "${cenv[@]}" CHEXD_PORT="$port" "${hc[@]}" && { healthy=1; break; }
  kill -0 "$chexd_pid" 2>/dev/null || { cat "$tmp/compose-chexd.log" >&2; fail "compose chexd exited"; }
  sleep 0.25
done
[ $healthy -eq 1 ] || fail "compose chexd never passed its healthcheck"
[ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$tmp/secrets/ca.pem" --resolve "chexd:$port:127.0.0.1" \
     "https://chexd:$port/v1/model")" = 401 ] || fail "compose chexd answers /v1/model without the token"
[ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$tmp/secrets/ca.pem" --resolve "chexd:$port:127.0.0.1" \
     -H "Authorization: Bearer $(cat "$tmp/secrets/token")" "https://chexd:$port/v1/model")" = 200 ] ||
  fail "compose chexd: https://chexd/v1/model with the token (certificate checked against the CA) is not 200"
kill -TERM "$chexd_pid"; wait "$chexd_pid" || fail "compose chexd exited non-zero on SIGTERM"; chexd_pid=
echo "compose: chexd with the service's TLS/token environment passes its healthcheck over HTTPS; https://chexd verified against the CA, 401 without the token"

# ---- measured memory with the Deployment's settings -------------------------------------------
mapfile -t kenv <"$tmp/k8s.env"
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
env "${kenv[@]}" "$BIN/chexd" --listen 127.0.0.1 --port "$port" --model "$MODEL" >"$tmp/chexd.log" 2>&1 &
chexd_pid=$!
for _ in $(seq 1 240); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$tmp/secrets/ca.pem" "https://127.0.0.1:$port/readyz")" = 200 ] && break
  kill -0 "$chexd_pid" 2>/dev/null || { cat "$tmp/chexd.log" >&2; fail "chexd with the Deployment's settings exited"; }
  sleep 0.25
done
[ "$(curl -s --cacert "$tmp/secrets/ca.pem" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port/readyz")" = 200 ] ||
  { cat "$tmp/chexd.log" >&2; fail "chexd with the Deployment's settings not ready after 60 s"; }
while read -r path; do
  # As the kubelet probes: HTTPS without verifying the certificate, no token.
  [ "$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port$path")" = 200 ] || fail "HTTPS probe path $path is not 200"
done <"$tmp/k8s.probes"
[ "$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port/v1/model")" = 401 ] || fail "k8s chexd: /v1/model without the token is not 401"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz")" != 200 ] || fail "k8s chexd answers plain HTTP"
batch=$(sed -n 's/^CHEXD_MAX_BATCH=//p' "$tmp/k8s.env")
n=$((2 * batch))
for i in $(seq 1 "$n"); do
  curl -s -o "$tmp/r$i.json" -w '%{http_code}\n' -H 'Content-Type: image/png' \
    -H "Authorization: Bearer $(cat "$tmp/secrets/token")" --cacert "$tmp/secrets/ca.pem" \
    --data-binary @tests/data/00000002_000.png "https://127.0.0.1:$port/v1/predict" >"$tmp/c$i" &
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
# ---- KServe InferenceService (deploy/k8s/kserve) ----------------------------------------------
"$PY" - "$tmp" <<'EOF' || fail "deploy/k8s/kserve/inferenceservice.yaml"
import os, sys
import yaml
tmp = sys.argv[1]
isvc = yaml.safe_load(open("deploy/k8s/kserve/inferenceservice.yaml"))
dep = yaml.safe_load(open("deploy/k8s/deployment.yaml"))
assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService", isvc["kind"]
pred = isvc["spec"]["predictor"]
c = pred["containers"][0]
assert c["name"] == "kserve-container", "KServe's custom predictor container is kserve-container"
dpod = dep["spec"]["template"]["spec"]
dc = dpod["containers"][0]
assert c["image"].split(":")[0] == dc["image"].split(":")[0], "not chexd's image"
assert "command" not in c and "args" not in c, "the image must run unchanged (its ENTRYPOINT)"
env = {e["name"]: e["value"] for e in c["env"]}
denv = {e["name"]: e["value"] for e in dc["env"]}
assert env["PROTOCOL"] == "v2", "KServe reads a custom container's protocol from PROTOCOL"
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
assert int(env["CHEXD_PORT"]) == ports["https"] and env["CHEXD_LISTEN"] == "0.0.0.0"
probes = {}
for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
    g = c[kind]["httpGet"]
    assert g["scheme"] == "HTTPS" and g["port"] in ("https", ports["https"]), kind
    assert g["path"].startswith("/v2/health/"), (kind, g["path"])
    probes[kind] = g["path"]
assert probes["readinessProbe"] == "/v2/health/ready", probes
# TLS and token: the same Secrets as deploy/k8s, mounted the same way (files, 0440).
mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
vols = {v["name"]: v for v in pred["volumes"]}
dmounts = {m["mountPath"]: m for m in dc["volumeMounts"]}
dvols = {v["name"]: v for v in dpod["volumes"]}
for k in ("CHEXD_TLS_CERT_FILE", "CHEXD_TLS_KEY_FILE", "CHEXD_API_TOKEN_FILE"):
    assert env[k] == denv[k], k
    d = os.path.dirname(env[k])
    assert mounts[d].get("readOnly"), d
    v, dv = vols[mounts[d]["name"]]["secret"], dvols[dmounts[d]["name"]]["secret"]
    assert v["secretName"] == dv["secretName"] and v["defaultMode"] == 0o440, (k, v)
sc = pred["securityContext"]
assert sc["runAsNonRoot"] and sc["runAsUser"] == 10001 and sc["fsGroup"] == 10001, sc
assert c["securityContext"]["readOnlyRootFilesystem"] and not c["securityContext"]["allowPrivilegeEscalation"]
# Resources match memory_limit_mb: the budget fits under the limit with 64 MiB to spare.
def mib(q):
    for u, f in {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}.items():
        if q.endswith(u):
            return float(q[:-2]) * f
    return float(q) / 2**20
res = c["resources"]
lim = mib(res["limits"]["memory"])
assert int(env["CHEXD_MEMORY_LIMIT_MB"]) + 64 <= lim, ("memory_limit_mb vs the memory limit", env["CHEXD_MEMORY_LIMIT_MB"], lim)
assert int(env["CHEXD_THREADS"]) == int(float(res["limits"]["cpu"])), "CHEXD_THREADS must equal the CPU limit"
grace = pred["terminationGracePeriodSeconds"]
assert float(c["lifecycle"]["preStop"]["exec"]["command"][-1]) + int(env["CHEXD_SHUTDOWN_TIMEOUT_MS"]) / 1000 < grace
with open(os.path.join(tmp, "kserve.env"), "w") as f:
    for k, v in env.items():
        if k in ("CHEXD_TLS_CERT_FILE", "CHEXD_TLS_KEY_FILE", "CHEXD_API_TOKEN_FILE"):
            v = os.path.join(tmp, "secrets", {"tls.crt": "chexd.crt", "tls.key": "chexd.key"}.get(os.path.basename(v), "token"))
        if k.startswith("CHEXD_") and k not in ("CHEXD_MODEL", "CHEXD_PORT", "CHEXD_LISTEN"):
            f.write(f"{k}={v}\n")
with open(os.path.join(tmp, "kserve.probes"), "w") as f:
    f.write("\n".join(sorted(set(probes.values()))) + "\n")
print(f"kserve: kserve-container, PROTOCOL v2, probes {sorted(set(probes.values()))}, deploy/k8s's Secrets, "
      f"memory_limit_mb {env['CHEXD_MEMORY_LIMIT_MB']} under {lim:.0f} Mi")
EOF
mapfile -t senv <"$tmp/kserve.env"
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
env "${senv[@]}" "$BIN/chexd" --listen 127.0.0.1 --port "$port" --model "$MODEL" >"$tmp/kserve-chexd.log" 2>&1 &
chexd_pid=$!
for _ in $(seq 1 240); do
  [ "$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port/v2/health/ready")" = 200 ] && break
  kill -0 "$chexd_pid" 2>/dev/null || { cat "$tmp/kserve-chexd.log" >&2; fail "chexd with the InferenceService's settings exited"; }
  sleep 0.25
done
while read -r path; do
  [ "$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port$path")" = 200 ] || fail "kserve probe path $path is not 200 over HTTPS"
done <"$tmp/kserve.probes"
[ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$tmp/secrets/ca.pem" "https://127.0.0.1:$port/v2/models/chexnet-demo")" = 401 ] ||
  fail "kserve chexd: /v2/models/chexnet-demo without the token is not 401"
{ printf '{"inputs":[{"name":"image","shape":[1],"datatype":"BYTES","parameters":{"content_type":"base64"},"data":["'
  base64 -w0 tests/data/00000001_000.png; printf '"]}]}'; } >"$tmp/infer.json"
curl -sf -H "Authorization: Bearer $(cat "$tmp/secrets/token")" --cacert "$tmp/secrets/ca.pem" \
  -H 'Content-Type: application/json' --data-binary @"$tmp/infer.json" \
  "https://127.0.0.1:$port/v2/models/chexnet-demo/infer" >"$tmp/infer.out" || fail "kserve chexd: v2 infer over HTTPS with the token"
"$PY" -c '
import json, sys
j = json.load(open(sys.argv[1]))
o = {x["name"]: x for x in j["outputs"]}
assert j["model_name"] == "chexnet-demo" and o["probabilities"]["shape"] == [1, 14], j' "$tmp/infer.out" || fail "kserve infer answer"
kill -TERM "$chexd_pid"; wait "$chexd_pid" || fail "kserve chexd exited non-zero on SIGTERM"; chexd_pid=
echo "kserve: chexd with the InferenceService's settings: HTTPS probes on /v2/health/*, v2 infer with the token (CA-verified), 401 without"

echo "service files: ok"
