#!/usr/bin/env bash
# deploy/make-secrets.sh - a private CA, chexd's TLS certificate and key signed by it, and a
# bearer token, for the shipped deployments (docker-compose.yml, k8s, systemd).
#
#   deploy/make-secrets.sh [--for-containers] [--new-token] DIR [NAME|IP ...]
#
# Writes DIR/ca.pem (give it to clients: the Orthanc plugin's CAFile, curl --cacert),
# DIR/ca.key (keep it offline once done), DIR/chexd.crt and DIR/chexd.key (chexd's
# tls_cert_file / tls_key_file), DIR/token (chexd's api_token_file and the plugin's
# TokenFile). The certificate names NAME... (default: chexd localhost 127.0.0.1); the
# client checks the host of its URL against them.
# Run again to renew the certificate (same CA, same token: clients need no change);
# --new-token also replaces the token (rotation: docs/OPERATIONS.md).
# DIR is 0700; files are 0600, or 0444 with --for-containers (compose bind-mounts them
# with the host's modes and the containers run as non-root users; DIR keeps them private).
set -euo pipefail
mode=0600 new_token=0
while [ $# -gt 0 ]; do
  case $1 in
    --for-containers) mode=0444; shift ;;
    --new-token) new_token=1; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    -*) echo "make-secrets: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "usage: $0 [--for-containers] [--new-token] DIR [NAME|IP ...]" >&2; exit 2; }
dir=$1; shift
[ $# -gt 0 ] || set -- chexd localhost 127.0.0.1
command -v openssl >/dev/null || { echo "make-secrets: openssl missing (apt-get install openssl)" >&2; exit 1; }
umask 077
mkdir -p "$dir"
chmod 0700 "$dir"
cd "$dir"
san=
for n in "$@"; do
  if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then san+=",IP:$n"; else san+=",DNS:$n"; fi
done
san=${san#,}

if [ ! -e ca.key ] || [ ! -e ca.pem ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=chexd private CA" -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "make-secrets: new CA $dir/ca.pem"
fi
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
  -keyout chexd.key.new -out chexd.csr 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n' \
  "$san" >chexd.ext
openssl x509 -req -in chexd.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 397 \
  -extfile chexd.ext -out chexd.crt.new 2>/dev/null
rm -f chexd.csr chexd.ext ca.srl
# Replaced by rename: a process re-reading them (SIGHUP) sees the old or the new file, never half.
chmod "$mode" chexd.key.new chexd.crt.new
mv -f chexd.key.new chexd.key
mv -f chexd.crt.new chexd.crt
echo "make-secrets: certificate $dir/chexd.crt for $san (397 days)"
if [ ! -s token ] || [ $new_token -eq 1 ]; then
  openssl rand -hex 32 >token.new
  chmod "$mode" token.new
  mv -f token.new token
  echo "make-secrets: new token $dir/token"
fi
chmod "$mode" ca.pem chexd.crt chexd.key token
chmod 0600 ca.key
