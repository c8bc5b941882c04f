#!/usr/bin/env bash
# The Redis run matrix, in one sitting on one machine: Lifeboat (kill, hang, silent), Redis
# Sentinel with its defaults (kill only: it needs 30 s just to notice, and a 10 s hang or
# silence ends before it would act), Sentinel tuned (kill, hang, silent); then
# summarize_redis.py prints the medians and the ratios Sentinel / Lifeboat.
# silent is skipped, with the reason printed, where faults.sh cannot apply it (no nft or no
# cgroup v2). A Lifeboat binary that does not accept the Redis service config makes its cells
# fail fast (the Sentinel cells still run); set SKIP_LIFEBOAT=1 to leave them out.
# Needs root, redis-server/redis-sentinel, redis-py, nftables, and for Lifeboat
# `cargo build --release -p lifeboat` done beforehand (this script never builds).
#   N (5) runs per Lifeboat and Sentinel-tuned cell, ND (3) for Sentinel default (each of its
#   runs takes over 30 s more); STEADY/JITTER (5/5 s) before each fault, the same for all.
#   RESULTS (default ../results/redis-sitting-<UTC date>).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RESULTS="${RESULTS:-$HERE/../results/redis-sitting-$(date -u +%Y%m%d)}"
N="${N:-5}" ND="${ND:-3}"
common=(--steady "${STEADY:-5}" --steady-jitter "${JITTER:-5}" --results "$RESULTS")
mkdir -p "$RESULTS"
if [[ "${SKIP_LIFEBOAT:-0}" != 1 ]]; then
  for fault in kill hang silent; do
    "$HERE/run-lifeboat-redis.sh" --fault "$fault" --runs "$N" "${common[@]}"
  done
fi
"$HERE/run-sentinel.sh" --settings default --fault kill --runs "$ND" "${common[@]}"
for fault in kill hang silent; do
  "$HERE/run-sentinel.sh" --settings tuned --fault "$fault" --runs "$N" "${common[@]}"
done
python3 "$HERE/summarize_redis.py" "$RESULTS" | tee "$RESULTS/summary.md"
