#!/usr/bin/env bash
# The region-outage drill, N (10) times in one sitting: each run is a fresh two-region
# PostgreSQL set under `lifeboat run` (bench/failover/run-lifeboat.sh --fault drill-region),
# where `lifeboat drill run region` silences every port of region us-east for FAULT_FOR (5) s,
# measures with its own canary, undoes the fault, rejoins the old primary and fails back;
# the shared benchmark's canary.py writes through the same endpoint and measures the same
# fault. summarize.py prints the drill's RTO (median, spread), lost writes, the whole drill's
# duration with its rollback, and how far the drill's RTO is from canary.py's.
# Needs root, nftables, ../shared/bench/failover/install.sh done, and
# `cargo build --release -p lifeboat`.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RESULTS="${RESULTS:-$HERE/results/sitting-$(date -u +%Y%m%d)}"
N="${N:-10}"
mkdir -p "$RESULTS"
"$HERE/../failover/run-lifeboat.sh" --fault drill-region --fault-for "${FAULT_FOR:-5}" --runs "$N" \
  --steady "${STEADY:-3}" --steady-jitter "${JITTER:-2}" --post 1 --results "$RESULTS"
python3 "$HERE/summarize.py" "$RESULTS"
