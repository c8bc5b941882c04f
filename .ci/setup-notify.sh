#!/usr/bin/env bash
# What the notification tests need: aiosmtpd (PyPI), the SMTP sink the email notifier sends to.
# (The HTTP receiver is the testkit's own Python script, standard library only.) Safe to run again.
set -euo pipefail
if ! python3 -c "import aiosmtpd" 2>/dev/null; then
  echo "[setup-notify] pip install aiosmtpd"
  timeout 600 python3 -m pip install -q 'aiosmtpd>=1.4,<2'
fi
