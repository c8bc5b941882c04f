#!/usr/bin/env bash
# The run matrix behind the README's failover table, in one sitting on one machine, every
# fault for both systems (faults.sh): SIGKILL of the primary node, a hang (SIGSTOP of every
# process) of 10 s, a silent network of 10 s, and a planned switchover; Lifeboat with its
# default settings in async and sync mode, Patroni with its fastest accepted settings
# (tuned: ttl 20, loop_wait 1, retry_timeout 3); then 20 SIGSTOP stalls of 300 ms against
# Lifeboat (expected: no failover). Then summarize.py prints medians and ratios.
# Needs root, ../shared/bench/failover/install.sh done, nftables, and
# `cargo build --release -p lifeboat`.
#   N (5) runs per Lifeboat async cell, NSYNC (3) per Lifeboat sync cell, NP (3) per Patroni
#   cell; STEADY/JITTER (5/5 s) before each fault, the same for both systems.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SHARED="${SHARED:-$HERE/../../../shared/bench/failover}"
RESULTS="${RESULTS:-$HERE/results/sitting-$(date -u +%Y%m%d)}"
N="${N:-5}" NSYNC="${NSYNC:-3}" NP="${NP:-3}"
common=(--steady "${STEADY:-5}" --steady-jitter "${JITTER:-5}" --results "$RESULTS")
mkdir -p "$RESULTS"
for fault in kill hang silent switchover; do
  "$HERE/run-lifeboat.sh" --fault "$fault" --runs "$N" "${common[@]}"
done
for fault in kill hang silent; do
  "$HERE/run-lifeboat.sh" --sync --fault "$fault" --runs "$NSYNC" "${common[@]}"
done
for fault in kill hang silent switchover; do
  "$HERE/run-patroni.sh" --profile tuned --fault "$fault" --runs "$NP" "${common[@]}"
done
"$HERE/run-lifeboat.sh" --stalls 20 --stall-ms 300 --results "$RESULTS"
python3 "$HERE/summarize.py" "$RESULTS"
