#!/usr/bin/env bash
# Installs what Lifeboat's demo and tests need on Debian 12, only what is missing:
# PostgreSQL 15 server binaries (and the `postgres` OS user that comes with them), nftables
# (the silent-network tests), Redis 7 (the Redis provider's tests), then any
# subsystem's own needs from .ci/setup-*.sh. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_missing=()
need() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || apt_missing+=("$1"); }
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then need postgresql-15; fi
command -v setpriv >/dev/null || need util-linux
command -v curl >/dev/null || need curl
# nft: the tests make a silent network with an nftables drop rule, and the drill tests silence
# and partition regions with it (they run as root in CI).
command -v nft >/dev/null || need nftables
# redis-server: the Redis provider's tests start real Redis 7 servers.
command -v redis-server >/dev/null || need redis-server
if ((${#apt_missing[@]})); then
  if [[ $EUID -ne 0 ]]; then
    echo "missing Debian packages: ${apt_missing[*]}; run this script as root (or: sudo apt-get install -y ${apt_missing[*]})" >&2
    exit 1
  fi
  echo "[install-deps] apt-get install ${apt_missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -qq
  timeout 900 apt-get install -y -qq --no-install-recommends "${apt_missing[@]}"
fi
id postgres >/dev/null 2>&1 || { echo "the OS user postgres is missing; reinstall postgresql-common" >&2; exit 1; }

for extra in .ci/setup-*.sh; do
  [[ -e "$extra" ]] || continue
  echo "[install-deps] $extra"
  bash "$extra"
done
echo "[install-deps] ok: $(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' ')"
