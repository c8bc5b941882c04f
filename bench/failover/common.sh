# shellcheck shell=bash
# common.sh - helpers every Lifeboat adapter of the failover benchmark shares (run-lifeboat.sh,
# redis/lib.sh). Sourced, not run. The caller sets T (the run's temp dir) and PY (python3).
# run-patroni.sh keeps its own: it stays a copy of the shared adapter in ../../../shared.

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S.%3N)" "$*" >&2; }
alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null && [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]; }
# wait_until SECONDS CMD...: poll CMD every 0.1 s, at most SECONDS
wait_until() { local t_end=$(( $(date +%s) + $1 )); shift; while (( $(date +%s) < t_end )); do "$@" && return 0; sleep 0.1; done; return 1; }
canary_acked() { grep -q '"t_ack"' "$T/canary.jsonl" 2>/dev/null; }
# acked_after TS: an acknowledged write after TS among the last 400 log lines
acked_after() {
  tail -n 400 "$T/canary.jsonl" 2>/dev/null | "$PY" -c '
import sys, json
f = float(sys.argv[1])
for l in sys.stdin:
    try: o = json.loads(l)
    except ValueError: continue
    if o.get("t_ack") and o["t_ack"] > f: sys.exit(0)
sys.exit(1)' "$1"
}
