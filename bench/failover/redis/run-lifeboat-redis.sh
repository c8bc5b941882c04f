#!/usr/bin/env bash
# run-lifeboat-redis.sh - the Lifeboat side of the Redis failover benchmark.
#
# Per run, in a fresh temp dir (mode 0700): the same three redis-server as run-sentinel.sh
# (n1 primary, n2/n3 replicas, --save '' --appendonly no, requirepass/masterauth in a 0600
# conf file), plus `lifeboat run --config <generated>` (controller + endpoint) with the Redis
# service below; canary_redis.py writes through Lifeboat's endpoint (--addr); after a steady
# period with random jitter the fault hits n1's redis-server (../faults.sh); the neutral probe
# (ROLE on n2/n3) times the promotion; the new master is the node whose ROLE says master (read
# from the servers, not from Lifeboat); canary_redis.py verify SCANs it for lost writes.
# `lifeboat status --json` and `lifeboat incident list --json` are saved as evidence.
#
# Usage: ./run-lifeboat-redis.sh [--runs N] [--fault kill|hang|silent] [--fault-for S]
#                                [--steady S] [--steady-jitter S] [--post S] [--promote-timeout S]
#                                [--results DIR] [--keep-tmp] [--interval S]
#        LIFEBOAT=path/to/lifeboat (default: target/release/lifeboat; this script never builds)
set -uo pipefail
export LC_ALL=C

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FAILOVER_DIR="$(cd "$HERE/.." && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
PYTHON="${PYTHON:-python3}"
PY="$("$PYTHON" -c 'import sys; print(sys.executable)')"
LIFEBOAT="${LIFEBOAT:-$ROOT/target/release/lifeboat}"
SETTINGS=default FAULT=kill FAULT_FOR=10 RUNS=1 STEADY=10 STEADY_JITTER=10 POST=5 PROMOTE_TIMEOUT=60 KEEP_TMP=0
CANARY_INTERVAL=0.010 WAIT_TIMEOUT_MS=500 RUN_HARD_LIMIT=300
RESULTS_DIR="$FAILOVER_DIR/results/redis"

# shellcheck source=../faults.sh
. "$FAILOVER_DIR/faults.sh"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
while (($#)); do
  case "$1" in
    *) shared_option "$@"; shift "$SHIFT";;
  esac
done

redis_fault_check
[[ "$FAULT" == switchover ]] && { echo "--fault switchover is not part of the Redis benchmark" >&2; exit 2; }
[[ -x "$LIFEBOAT" ]] || { echo "lifeboat not found at $LIFEBOAT: cargo build --release -p lifeboat (or set LIFEBOAT=)" >&2; exit 2; }
redis_preflight "$REDIS_SERVER" || exit 2
LIFEBOAT_VERSION="$("$LIFEBOAT" --version | awk '{print $2}')"
mkdir -p "$RESULTS_DIR"

# write_config FILE: the Lifeboat config of one run (the shape of the Redis service is fixed
# by the benchmark's brief; keep it byte-for-byte apart from the substituted values)
write_config() {
  local pf="$T/redis.pass"
  cat > "$1" <<EOF
[controller]
api-listen = "127.0.0.1:$API"
state-dir = "$T/state"
api-token-env = "LIFEBOAT_API_TOKEN"

[tiers.gold]
rto = "30s"
rpo = "1s"

[services.cache]
kind = "redis"
tier = "gold"

[services.cache.endpoint]
listen = "127.0.0.1:$EP"

[services.cache.failover]
replication = "sync"        # promote only a replica holding every write confirmed by WAIT
max-lag = "16MiB"

[services.cache.regions.us-east]
role = "primary"
priority = 100

[[services.cache.regions.us-east.nodes]]
name = "cache-1"
host = "127.0.0.1"
port = $P1
password-file = "$pf"

[services.cache.regions.eu-west]
role = "standby"
priority = 50

[[services.cache.regions.eu-west.nodes]]
name = "cache-2"
host = "127.0.0.1"
port = $P2
password-file = "$pf"

[[services.cache.regions.eu-west.nodes]]
name = "cache-3"
host = "127.0.0.1"
port = $P3
password-file = "$pf"
EOF
}

api() { echo "http://127.0.0.1:$API"; }
endpoint_is_master() { [[ "$(role_of "$EP")" == master ]]; }
save_status() { timeout 10 "$LIFEBOAT" status --api "$(api)" --json > "$1" 2>/dev/null; }

T="" LB_PID="" CANARY_PID="" PROBE_PID=""
teardown() {
  local rc=$?
  trap '' INT TERM; trap - EXIT
  fault_end
  [[ -z "$T" ]] && return $rc
  stop_pids ${PROBE_PID:+"$PROBE_PID"} ${CANARY_PID:+"$CANARY_PID"}
  stop_pids ${LB_PID:+"$LB_PID"}
  stop_pids "${NODE_PID[@]}"
  wait 2>/dev/null
  if ((KEEP_TMP)); then log "kept $T"; else rm -rf "$T"; fi
  T="" LB_PID="" CANARY_PID="" PROBE_PID=""
  return $rc
}

run_once() {
  local run_id="$RUN_ID" rc=0
  trap teardown EXIT; trap 'teardown; exit 130' INT TERM
  umask 077
  T="$(mktemp -d /tmp/redis-lifeboat-bench.XXXXXX)"
  read -r P1 P2 P3 EP API <<< "$(free_ports 5)"
  log "run $run_id: fault=$FAULT tmp=$T redis=$P1/$P2/$P3 endpoint=$EP api=$API"
  start_redis_trio || return 4
  write_config "$T/lifeboat.toml"
  if ! "$LIFEBOAT" config check "$T/lifeboat.toml" > "$T/config-check.out" 2>&1; then
    log "lifeboat $LIFEBOAT_VERSION rejects the Redis service config (is Redis support built in?):"
    sed 's/^/    /' "$T/config-check.out" >&2
    return 3
  fi
  LIFEBOAT_API_TOKEN="$(head -c 18 /dev/urandom | base64)"; export LIFEBOAT_API_TOKEN
  ( cd "$T" && exec "$LIFEBOAT" run --config "$T/lifeboat.toml" ) > "$T/lifeboat.log" 2>&1 < /dev/null &
  LB_PID=$!
  # ready = the endpoint answers ROLE with master (it routes to n1), checked through the endpoint
  wait_until 30 endpoint_is_master || { log "the endpoint never routed to a master"; tail -20 "$T/lifeboat.log" >&2; return 4; }
  wait_until 15 save_status "$T/status_before.json" || log "WARNING: lifeboat status failed (kept going)"
  log "lifeboat $LIFEBOAT_VERSION up (pid $LB_PID), endpoint 127.0.0.1:$EP answers as master"

  "$PY" "$CANARY" run --addr "127.0.0.1:$EP" --password-file "$T/redis.pass" \
    --log "$T/canary.jsonl" --interval "$CANARY_INTERVAL" --wait-timeout-ms "$WAIT_TIMEOUT_MS" \
    --max-duration "$RUN_HARD_LIMIT" > "$T/canary.out" 2>&1 < /dev/null &
  CANARY_PID=$!
  wait_until 30 canary_acked || { log "canary never got a confirmed write"; cat "$T/canary.out" >&2; return 5; }
  local steady; steady="$(steady_period)"; echo "$steady" > "$T/steady_s"
  log "canary running; steady for ${steady}s"
  nap "$steady"

  "$PY" "$CANARY" wait-primary --node "127.0.0.1:$P2" --node "127.0.0.1:$P3" \
    --password-file "$T/redis.pass" --timeout "$PROMOTE_TIMEOUT" \
    --ready-file "$T/probe.ready" --out "$T/probe.json" > "$T/probe.out" 2>&1 < /dev/null &
  PROBE_PID=$!
  wait_until 15 test -s "$T/probe.ready" || { log "probe not ready"; cat "$T/probe.out" >&2; return 6; }

  apply_fault || return 6
  end_fault_on_time

  wait "$PROBE_PID"; PROBE_PID=""
  if "$PY" -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("promoted_detected_at") else 1)' "$T/probe.json" 2>/dev/null; then
    wait_until 30 acked_after "$FAULT_TS" || log "WARNING: no confirmed write after the fault within 30s"
    nap "$POST"
  else
    log "WARNING: no replica promoted within ${PROMOTE_TIMEOUT}s"; [[ "$FAULT" == kill ]] && rc=7
  fi
  stop_pids "$CANARY_PID"; wait "$CANARY_PID" 2>/dev/null; CANARY_PID=""
  save_status "$T/status_after.json"
  timeout 10 "$LIFEBOAT" incident list --api "$(api)" --json > "$T/incidents.json" 2>/dev/null

  # The new master, from the servers themselves: the one whose ROLE says master.
  local final; final="$(final_master_port)" || { log "no single master among the three nodes"; final="$P1"; ((rc)) || rc=9; }
  log "final master: 127.0.0.1:$final"
  "$PY" - "$T" > "$T/lifeboat_extra.json" <<'PYEOF'
import json, sys
T = sys.argv[1]
try:
    incidents = json.load(open(f"{T}/incidents.json"))
except (OSError, ValueError):
    incidents = []
inc = next((i for i in incidents if isinstance(i, dict) and i.get("kind") in ("failover", "switchover")), {})
fig = inc.get("figures", {}) or {}
ms = lambda k: None if fig.get(k) is None else fig[k] / 1000.0
print(json.dumps({"incident": inc.get("id"), "incident_status": inc.get("status"),
                  "lifeboat_fault_to_detect_s": ms("detect_ms"), "lifeboat_fault_to_promoted_s": ms("promote_ms"),
                  "lifeboat_fault_to_first_write_s": ms("first_write_ms"),
                  "lag_bytes_at_fault": fig.get("lag_bytes_at_fault")}))
PYEOF
  SYSTEM=lifeboat SYSTEM_VERSION="$LIFEBOAT_VERSION" DCS="none (embedded store)" SYNC=1 \
  CANARY_VIA="Lifeboat endpoint 127.0.0.1:$EP (fixed address)" \
  PARAMS_JSON='{"replication": "sync", "max_lag": "16MiB", "probe": "Lifeboat defaults", "replicas": 2}' \
    write_meta "$T/meta.json" "$T/lifeboat_extra.json"
  "$PY" "$CANARY" verify --addr "127.0.0.1:$final" --password-file "$T/redis.pass" \
    --log "$T/canary.jsonl" --fault-ts "@$T/fault_ts" --meta "$T/meta.json" --probe "$T/probe.json" \
    --out "$RESULTS_DIR/$run_id.json" --quiet --connect-wait 20 > "$T/verify.out" 2>&1
  cat "$T/verify.out" >&2
  "$PY" - "$RESULTS_DIR/$run_id.json" <<'PYEOF' >&2
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    print("RESULT: no result JSON"); sys.exit(0)
v = r["verify"]
print(f"RESULT {r['run_id']}: kill->promoted={r['kill_to_promoted_s']}s kill->first confirmed ack={v.get('fault_to_first_ack_s')}s "
      f"longest gap={v.get('rto_max_gap_s')}s lost confirmed={v.get('lost_acked')} failed attempts={v.get('failed_attempts')}")
PYEOF
  mkdir -p "$RESULTS_DIR/$run_id"
  cp "$T/probe.json" "$T/lifeboat.log" "$T/status_before.json" "$T/status_after.json" "$T/incidents.json" \
     "$T/lifeboat.toml" "$T/fault_ts" "$RESULTS_DIR/$run_id/" 2>/dev/null
  for n in n1 n2 n3; do cp "$T/$n/redis.log" "$RESULTS_DIR/$run_id/$n.log" 2>/dev/null; done
  gzip -c "$T/canary.jsonl" > "$RESULTS_DIR/$run_id/canary.jsonl.gz" 2>/dev/null
  [[ -s "$RESULTS_DIR/$run_id.json" ]] || rc=8
  return $rc
}

export FAULT FAULT_FOR SETTINGS CANARY_INTERVAL WAIT_TIMEOUT_MS
run_loop "lifeboat-redis-$FAULT"
