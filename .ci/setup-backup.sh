#!/usr/bin/env bash
# What the backup tests need: moto's S3-compatible server (PyPI). Safe to run again.
set -euo pipefail
if ! python3 -c "import moto.server, flask" 2>/dev/null; then
  echo "[setup-backup] pip install moto[server]"
  timeout 600 python3 -m pip install -q 'moto[server]>=5,<6'
fi
