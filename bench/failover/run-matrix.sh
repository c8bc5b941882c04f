#!/usr/bin/env bash
# The run matrix behind the README's failover table, in one sitting on one machine:
# Lifeboat 10 x async and 5 x sync (default settings), Patroni tuned 3 x (the shared anchor,
# its fastest accepted settings), then 20 SIGSTOP stalls of 300 ms against Lifeboat.
# Needs root, ../shared/bench/failover/install.sh done, and `cargo build --release -p lifeboat`.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SHARED="${SHARED:-$HERE/../../../shared/bench/failover}"
RESULTS="${RESULTS:-$HERE/results}"
mkdir -p "$RESULTS"
"$HERE/run-lifeboat.sh" --runs 10 --results "$RESULTS"
"$HERE/run-lifeboat.sh" --sync --runs 5 --results "$RESULTS"
"$SHARED/run-patroni.sh" --profile tuned --runs 3 --results "$RESULTS"
"$HERE/run-lifeboat.sh" --stalls 20 --stall-ms 300
python3 "$SHARED/canary.py" report "$RESULTS"/*.json --stats
