#!/usr/bin/env bash
# Installs the Debian 12 packages chexd needs, only those missing.
#   deploy/install-deps.sh [--runtime] [--build] [--test]   (default: --runtime --build)
# Package lists live in deploy/packages/{runtime,build,test}.txt, one name per line;
# "PKG COMMAND" installs PKG only when COMMAND is not on PATH (for tools another
# package may already provide, e.g. npm bundled with a non-Debian nodejs).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
groups=()
for a in "$@"; do
  case "$a" in
    --runtime) groups+=(runtime) ;;
    --build) groups+=(build) ;;
    --test) groups+=(test) ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    *) echo "install-deps.sh: unknown option '$a' (use --runtime, --build, --test)" >&2; exit 2 ;;
  esac
done
[ ${#groups[@]} -gt 0 ] || groups=(runtime build)

missing=()
for g in "${groups[@]}"; do
  while read -r pkg cmd _; do
    case "$pkg" in ''|'#'*) continue ;; esac
    case "$cmd" in ''|'#'*) ;; *) command -v "$cmd" >/dev/null 2>&1 && continue ;; esac
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$pkg")
    fi
  done < "$here/packages/$g.txt"
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "install-deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
