#!/usr/bin/env bash
# Notifications, in one sitting with the failover benchmark (bench/failover/run-lifeboat.sh):
#  1. fault -> first notification received: for each fault (kill, hang, silent), RUNS (5) runs
#     of the failover benchmark with a webhook notifier posting to a recording receiver;
#     canary.py measures the RTO of the same runs, so both figures come from one fault;
#  2. the outbox in a storm of STORM (1,000) incident updates with one receiver down, STORM_RUNS
#     (3) times with the webhooks' default rate limit (6,000 a minute) and STORM_RUNS times
#     unlimited (max-per-minute = 1,000,000), to separate the limit from the outbox.
# summarize.py prints medians and ratios. Needs root, nftables (silent), psycopg
# (../shared/bench/failover/install.sh) and `cargo build --release -p lifeboat`.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RESULTS="${RESULTS:-$HERE/results/sitting-$(date -u +%Y%m%d)}"
RUNS="${RUNS:-5}" STORM="${STORM:-1000}" STORM_RUNS="${STORM_RUNS:-3}"
RUN="$HERE/../failover/run-lifeboat.sh"
mkdir -p "$RESULTS"
for fault in kill hang silent; do
  "$RUN" --notify --fault "$fault" --fault-for 5 --runs "$RUNS" --steady 3 --steady-jitter 2 --post 1 \
    --results "$RESULTS/first-notice"
done
"$RUN" --storm "$STORM" --runs "$STORM_RUNS" --results "$RESULTS/storm"
"$RUN" --storm "$STORM" --storm-rate 1000000 --runs "$STORM_RUNS" --results "$RESULTS/storm"
python3 "$HERE/summarize.py" "$RESULTS" | tee "$RESULTS/summary.md"
