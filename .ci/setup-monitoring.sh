#!/usr/bin/env bash
# What the monitoring tests need: `promtool` (Debian package `prometheus`), which checks the
# generated alert rules and runs their unit tests. Safe to run again. Only the tool is
# wanted: the Prometheus server the package brings is neither started nor enabled.
set -euo pipefail
command -v promtool >/dev/null && exit 0
if [[ $EUID -ne 0 ]]; then
  echo "promtool is missing; run this script as root (or: sudo apt-get install -y --no-install-recommends prometheus)" >&2
  exit 1
fi
echo "[setup-monitoring] apt-get install prometheus (for promtool)"
export DEBIAN_FRONTEND=noninteractive
# Keep the package's service from starting during the install (invoke-rc.d and
# deb-systemd-invoke honour policy-rc.d); a policy already in place is left alone.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
timeout 600 apt-get update -qq
timeout 900 apt-get install -y -qq --no-install-recommends prometheus
# Nor at the next boot.
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
  systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
command -v promtool >/dev/null || { echo "promtool is still missing after installing prometheus" >&2; exit 1; }
