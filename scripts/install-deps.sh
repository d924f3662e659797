#!/usr/bin/env bash
# Installs the Debian packages in scripts/packages.txt that are missing.
# Idempotent, and silent when everything is already there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mapfile -t pkgs < <(grep -v '^\s*#' "$here/packages.txt" | grep -v '^\s*$')
# Node.js and npm for the gRPC/WebSocket test peers (tests/peers): Debian's,
# unless a node with npm is there already (a NodeSource nodejs bundles npm
# and conflicts with Debian's npm package).
command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
# One dpkg-query for all of them: one per package made every ./dev build
# spend seconds here.
declare -A installed=()
while read -r name status; do
  [ "$status" = "install ok installed" ] && installed[$name]=1
done < <(dpkg-query -W -f='${Package} ${Status}\n' "${pkgs[@]}" 2>/dev/null || true)
missing=()
for p in "${pkgs[@]}"; do
  [ -n "${installed[$p]:-}" ] || missing+=("$p")
done
peers() { "$here/../tests/peers/install.sh"; }
[ ${#missing[@]} -eq 0 ] && { peers; exit 0; }
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=sudo
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine has no package lists yet; refresh them when an install fails.
if ! $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/legate-apt.log 2>&1; then
  $sudo apt-get update -q >/tmp/legate-apt.log 2>&1
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/legate-apt.log 2>&1 ||
    { cat /tmp/legate-apt.log >&2; exit 1; }
fi
peers
