#!/usr/bin/env bash
# run-sentinel.sh - the Redis Sentinel anchor of the Redis failover benchmark.
#
# Per run, in a fresh temp dir (mode 0700): three redis-server on free loopback ports (n1
# primary, n2/n3 replicas; --save '' --appendonly no; requirepass/masterauth in a 0600
# conf file) and three redis-sentinel monitoring them (quorum 2, `sentinel auth-pass` in their
# 0600 conf); wait until every Sentinel sees 2 replicas and 2 other Sentinels; canary_redis.py
# writes through Sentinel (asks the Sentinels for the master on every reconnect, checks ROLE);
# after a steady period with random jitter, the fault hits n1's redis-server (faults.sh);
# the neutral probe (ROLE on n2/n3, and the Sentinels' answer) times the promotion; the run
# waits (bounded) for a confirmed write after the fault, lets the canary write --post seconds
# more, stops it, and verifies against the master the Sentinels name (checked with ROLE).
#
# Usage: ./run-sentinel.sh --settings default|tuned [--runs N] [--fault kill|hang|silent]
#                          [--fault-for S] [--steady S] [--steady-jitter S] [--post S]
#                          [--promote-timeout S] [--results DIR] [--keep-tmp] [--interval S]
#        --fault: kill (default: SIGKILL of n1's redis-server), hang (SIGSTOP for --fault-for,
#            10 s, then SIGCONT), silent (n1's packets dropped for --fault-for: nftables +
#            cgroup v2, see ../faults.sh; skipped with a reason when this machine lacks them).
#        Results: DIR/<run_id>.json (default ../results/redis), raw evidence in DIR/<run_id>/.
set -uo pipefail
export LC_ALL=C

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FAILOVER_DIR="$(cd "$HERE/.." && pwd)"
PYTHON="${PYTHON:-python3}"
PY="$("$PYTHON" -c 'import sys; print(sys.executable)')"
SETTINGS="" FAULT=kill FAULT_FOR=10 RUNS=1 STEADY=10 STEADY_JITTER=10 POST=5 PROMOTE_TIMEOUT="" KEEP_TMP=0
CANARY_INTERVAL=0.010 WAIT_TIMEOUT_MS=500 RUN_HARD_LIMIT=300
RESULTS_DIR="$FAILOVER_DIR/results/redis"

# shellcheck source=../faults.sh
. "$FAILOVER_DIR/faults.sh"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
while (($#)); do
  case "$1" in
    --settings) SETTINGS="$2"; shift 2;;
    *) shared_option "$@"; shift "$SHIFT";;
  esac
done

# Sentinel settings. Quorum 2 of 3 Sentinels in both.
case "$SETTINGS" in
  # Sentinel's documented defaults: sentinel.conf (redis/redis) "down-after-milliseconds ...
  # Default is 30 seconds", "failover-timeout ... Default is 3 minutes", parallel-syncs 1;
  # the same values are the compiled-in defaults (SENTINEL_DEFAULT_DOWN_AFTER 30000,
  # SENTINEL_DEFAULT_FAILOVER_TIMEOUT 180000, SENTINEL_DEFAULT_PARALLEL_SYNCS 1 in sentinel.c).
  default) DOWN_AFTER=30000 FAILOVER_TIMEOUT=180000 PARALLEL_SYNCS=1; : "${PROMOTE_TIMEOUT:=120}";;
  # The lowest values worth configuring, since neither the docs nor the code give a floor:
  # * The config parser accepts any value > 0 for both ("negative or zero time parameter",
  #   sentinelHandleConfiguration in src/sentinel.c). redis-doc docs/management/sentinel.md
  #   states no minimum or recommendation; its examples use 60000/10000 (Configuring Sentinel)
  #   and 5000 with failover-timeout 60000 (A quick tutorial).
  # * down-after-milliseconds 1000: Sentinel PINGs every min(down-after-milliseconds, 1000) ms
  #   (sentinelSendPeriodicCommands: "every second anyway if 'down-after-milliseconds' is
  #   greater than 1 second"), so 1000 is the lowest value that keeps Sentinel's own 1 s probe
  #   cadence; below it Sentinel just pings faster, and sub-second values are reported to cause
  #   false failovers (redis/redis#8607: 500 ms flapped, fixed at 2000).
  # * failover-timeout 2000: it caps the leader election wait (min(10 s, failover-timeout)),
  #   bounds the wait for the promoted replica to show role:master in INFO, which Sentinel
  #   polls once per second for replicas during a failover (info_period 1000), and sets the
  #   retry delay (2 x failover-timeout). It must exceed that 1 s INFO period with room for
  #   the election (failover start is randomised by up to 1 s, SENTINEL_MAX_DESYNC), so 2 s.
  # * parallel-syncs 1 (default): with two replicas only one is re-pointed after a failover, and
  #   the value has no effect on when the new master accepts writes.
  tuned) DOWN_AFTER=1000 FAILOVER_TIMEOUT=2000 PARALLEL_SYNCS=1; : "${PROMOTE_TIMEOUT:=60}";;
  *) echo "--settings default|tuned is required" >&2; exit 2;;
esac

redis_fault_check
[[ "$FAULT" == switchover ]] && { echo "--fault switchover is not part of the Redis benchmark" >&2; exit 2; }
redis_preflight "$REDIS_SENTINEL" || exit 2
mkdir -p "$RESULTS_DIR"

S1="" S2="" S3=""
declare -A SENT_PID=()
sentinel_node() {
  local name="$1" port="$2" d="$T/$1"
  mkdir -p "$d"
  ( umask 077; cat > "$d/sentinel.conf" <<EOF
bind 127.0.0.1
port $port
daemonize no
dir $d
logfile $d/sentinel.log
sentinel resolve-hostnames no
sentinel monitor mymaster 127.0.0.1 $P1 2
sentinel auth-pass mymaster $(cat "$T/redis.pass")
sentinel down-after-milliseconds mymaster $DOWN_AFTER
sentinel failover-timeout mymaster $FAILOVER_TIMEOUT
sentinel parallel-syncs mymaster $PARALLEL_SYNCS
EOF
  )
  "$REDIS_SENTINEL" "$d/sentinel.conf" < /dev/null > "$d/stdout" 2>&1 &
  SENT_PID[$name]=$!
}
# sentinel_ready PORT: it monitors n1 as master with 2 replicas and 2 other Sentinels
sentinel_ready() {
  scli "$1" SENTINEL MASTER mymaster | tr -d '\r' | awk '
    NR%2==1 {k=$0; next}
    k=="flags" {f=$0} k=="num-slaves" {s=$0} k=="num-other-sentinels" {o=$0} k=="port" {p=$0}
    END {exit !(f=="master" && s==2 && o==2 && p==ENVIRON["P1"])}'
}
sentinels_addr() { local p; for p in "$S1" "$S2" "$S3"; do echo "$p: $(scli "$p" SENTINEL get-master-addr-by-name mymaster | tr '\n' ' ')"; done; }

T="" CANARY_PID="" PROBE_PID=""
teardown() {
  local rc=$?
  trap '' INT TERM; trap - EXIT
  fault_end
  [[ -z "$T" ]] && return $rc
  stop_pids ${PROBE_PID:+"$PROBE_PID"} ${CANARY_PID:+"$CANARY_PID"}
  stop_pids "${SENT_PID[@]}" "${NODE_PID[@]}"
  wait 2>/dev/null
  if ((KEEP_TMP)); then log "kept $T"; else rm -rf "$T"; fi
  T="" CANARY_PID="" PROBE_PID=""
  return $rc
}

run_once() {
  local run_id="$RUN_ID" rc=0
  trap teardown EXIT; trap 'teardown; exit 130' INT TERM
  umask 077
  T="$(mktemp -d /tmp/redis-sentinel-bench.XXXXXX)"
  read -r P1 P2 P3 S1 S2 S3 <<< "$(free_ports 6)"; export P1
  log "run $run_id: settings=$SETTINGS fault=$FAULT tmp=$T redis=$P1/$P2/$P3 sentinels=$S1/$S2/$S3"
  start_redis_trio || return 4
  sentinel_node s1 "$S1"; sentinel_node s2 "$S2"; sentinel_node s3 "$S3"
  wait_until 60 sentinel_ready "$S1" && wait_until 20 sentinel_ready "$S2" && wait_until 20 sentinel_ready "$S3" \
    || { log "Sentinels never saw 2 replicas and each other"; scli "$S1" SENTINEL MASTER mymaster | paste - - >&2; return 4; }
  log "redis $REDIS_VERSION x3 and 3 Sentinels up (down-after $DOWN_AFTER ms, failover-timeout $FAILOVER_TIMEOUT ms)"

  local sents="127.0.0.1:$S1,127.0.0.1:$S2,127.0.0.1:$S3"
  "$PY" "$CANARY" run --sentinels "$sents" --master-name mymaster --password-file "$T/redis.pass" \
    --log "$T/canary.jsonl" --interval "$CANARY_INTERVAL" --wait-timeout-ms "$WAIT_TIMEOUT_MS" \
    --max-duration "$RUN_HARD_LIMIT" > "$T/canary.out" 2>&1 < /dev/null &
  CANARY_PID=$!
  wait_until 30 canary_acked || { log "canary never got a confirmed write"; cat "$T/canary.out" >&2; return 5; }
  local steady; steady="$(steady_period)"; echo "$steady" > "$T/steady_s"
  log "canary running; steady for ${steady}s"
  nap "$steady"

  "$PY" "$CANARY" wait-primary --node "127.0.0.1:$P2" --node "127.0.0.1:$P3" --sentinels "$sents" \
    --old-master "127.0.0.1:$P1" --password-file "$T/redis.pass" --timeout "$PROMOTE_TIMEOUT" \
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
    # for hang and silent, "not promoted" is a result (the node came back), not an error
    log "WARNING: no replica promoted within ${PROMOTE_TIMEOUT}s"; [[ "$FAULT" == kill ]] && rc=7
  fi
  sentinels_addr > "$T/sentinels_after.txt"
  stop_pids "$CANARY_PID"; wait "$CANARY_PID" 2>/dev/null; CANARY_PID=""

  # The master the Sentinels name now (canary_redis.py verify asks them and checks ROLE).
  "$PY" - "$T" > "$T/sentinel_extra.json" <<'PYEOF'
import json, re, sys, time, calendar
T = sys.argv[1]
fault = float(open(f"{T}/fault_ts").read())
# Sentinel log lines: "pid:X 04 Dec 2026 19:45:00.123 # +odown master mymaster 127.0.0.1 6379 #quorum 2/2"
pat = re.compile(r"^\d+:X (\d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2})\.(\d{3}) [#*] (\S+)")
first = {}
for s in ("s1", "s2", "s3"):
    try:
        lines = open(f"{T}/{s}/sentinel.log").read().splitlines()
    except OSError:
        continue
    for l in lines:
        m = pat.match(l)
        if not m:
            continue
        t = time.mktime(time.strptime(m.group(1), "%d %b %Y %H:%M:%S")) + int(m.group(2)) / 1000.0
        ev = m.group(3)
        if t >= fault - 0.001 and ev in ("+sdown", "+odown", "+elected-leader", "+selected-slave",
                                          "+promoted-slave", "+switch-master", "+failover-end",
                                          "-failover-abort-not-elected", "+tilt"):
            if ev == "+sdown" and " master " not in l:
                continue
            first[ev] = min(first.get(ev, t), t)  # earliest over the three Sentinels
print(json.dumps({"sentinel_" + k.strip("+-").replace("-", "_") + "_s": round(v - fault, 3)
                  for k, v in sorted(first.items(), key=lambda kv: kv[1])}))
PYEOF
  SYSTEM=sentinel SYSTEM_VERSION="$REDIS_VERSION" DCS="3 x redis-sentinel, quorum 2" SYNC=0 \
  CANARY_VIA="Sentinel (SENTINEL get-master-addr-by-name on every reconnect, then ROLE)" \
  PARAMS_JSON="{\"down_after_ms\": $DOWN_AFTER, \"failover_timeout_ms\": $FAILOVER_TIMEOUT, \"parallel_syncs\": $PARALLEL_SYNCS, \"quorum\": 2, \"sentinels\": 3, \"replicas\": 2}" \
    write_meta "$T/meta.json" "$T/sentinel_extra.json"
  "$PY" "$CANARY" verify --sentinels "$sents" --master-name mymaster --password-file "$T/redis.pass" \
    --log "$T/canary.jsonl" --fault-ts "@$T/fault_ts" --meta "$T/meta.json" --probe "$T/probe.json" \
    --out "$RESULTS_DIR/$run_id.json" --quiet --connect-wait 20 > "$T/verify.out" 2>&1
  cat "$T/verify.out" >&2
  "$PY" - "$RESULTS_DIR/$run_id.json" <<'PYEOF' >&2
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    print("RESULT: no result JSON"); sys.exit(0)
v, s = r["verify"], r.get("system_specific", {})
print(f"RESULT {r['run_id']}: kill->promoted={r['kill_to_promoted_s']}s "
      f"sentinels switched={s.get('fault_to_sentinels_switched_s')}s kill->first confirmed ack={v.get('fault_to_first_ack_s')}s "
      f"longest gap={v.get('rto_max_gap_s')}s lost confirmed={v.get('lost_acked')} failed attempts={v.get('failed_attempts')}")
PYEOF
  mkdir -p "$RESULTS_DIR/$run_id"
  cp "$T/probe.json" "$T/sentinels_after.txt" "$T/fault_ts" "$RESULTS_DIR/$run_id/" 2>/dev/null
  for n in n1 n2 n3 s1 s2 s3; do
    cp "$T/$n/"*.log "$RESULTS_DIR/$run_id/$n.log" 2>/dev/null
  done
  gzip -c "$T/canary.jsonl" > "$RESULTS_DIR/$run_id/canary.jsonl.gz" 2>/dev/null
  [[ -s "$RESULTS_DIR/$run_id.json" ]] || rc=8
  return $rc
}

export FAULT FAULT_FOR SETTINGS CANARY_INTERVAL WAIT_TIMEOUT_MS
run_loop "sentinel-$SETTINGS-$FAULT"
