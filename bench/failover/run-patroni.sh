#!/usr/bin/env bash
# run-patroni.sh - the shared Patroni adapter (../../../shared/bench/failover/run-patroni.sh)
# with the faults of faults.sh, so that Patroni gets the same quiet faults as Lifeboat in the
# same sitting: --fault kill (the shared script's fault), hang, silent, switchover
# (`patronictl switchover`). Everything else (cluster, canary, verify, JSON) is unchanged;
# the fault name is appended to the profile ("tuned/hang") so `canary.py report` and
# summarize.py group by it. For hang and silent the fault lasts --fault-for seconds (10)
# whether or not Patroni fails over within it; "not promoted" is then a result, not an error.
#
# Original description:
# run-patroni.sh - Patroni adapter for the neutral PostgreSQL failover benchmark.
#
# For every run it builds a brand-new cluster in a private temp dir:
#   1 x etcd 3.4 (loopback)  +  2 x Patroni-managed PostgreSQL (5433/5434, REST 8008/8009)
# then: wait for leader + streaming (or sync) replica -> start canary.py on the
# multi-host DSN -> steady period -> SIGKILL the leader's patroni + postmaster +
# every other process of that PostgreSQL instance (node loss) -> wait for the
# replica to be promoted (neutral probe: pg_is_in_recovery() flips) -> let the
# canary run a few more seconds -> stop it -> canary.py verify -> result JSON ->
# tear everything down (only PIDs this script started) and remove the temp dir.
#
# Only the cluster setup/readiness part is Patroni-specific; the measurement is
# done by canary.py (writes, verify, wait-primary) which only speaks libpq.
#
# Usage: ./run-patroni.sh [--profile default|tuned] [--sync] [--runs N]
#                         [--steady S] [--steady-jitter S] [--post S] [--promote-timeout S]
#                         [--results DIR] [--keep-tmp] [--ttl N --loop-wait N --retry-timeout N]
set -uo pipefail
export LC_ALL=C            # '.' decimal separator for $EPOCHREALTIME

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SHARED="${SHARED:-$HERE/../../../shared/bench/failover}"
FAULT=kill FAULT_FOR=10
# shellcheck source=faults.sh
. "$HERE/faults.sh"
PYTHON="${PYTHON:-python3}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PATRONI_BIN="${PATRONI_BIN:-/usr/bin/patroni}"
ETCD_BIN="${ETCD_BIN:-/usr/bin/etcd}"
PG_OS_USER="${PG_OS_USER:-postgres}"
PORT_PG1="${PORT_PG1:-5433}";   PORT_PG2="${PORT_PG2:-5434}"
PORT_API1="${PORT_API1:-8008}"; PORT_API2="${PORT_API2:-8009}"
PORT_ETCD="${PORT_ETCD:-2479}"; PORT_ETCD_PEER="${PORT_ETCD_PEER:-2480}"
LOOPBACK="${LOOPBACK:-127.0.0.1}"

PROFILE=default SYNC=0 RUNS=1 STEADY=10 STEADY_JITTER=10 POST=5 PROMOTE_TIMEOUT=90 KEEP_TMP=0
CANARY_INTERVAL=0.010 RUN_HARD_LIMIT=420
RESULTS_DIR="$HERE/results"
O_TTL="" O_LOOP="" O_RETRY=""

usage() { awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$0"; exit "${1:-0}"; }
while (($#)); do
  case "$1" in
    --profile) PROFILE="$2"; shift 2;;
    --fault) FAULT="$2"; shift 2;;
    --fault-for) FAULT_FOR="$2"; shift 2;;
    --sync) SYNC=1; shift;;
    --async) SYNC=0; shift;;
    --runs) RUNS="$2"; shift 2;;
    --steady) STEADY="$2"; shift 2;;
    --steady-jitter) STEADY_JITTER="$2"; shift 2;;
    --post) POST="$2"; shift 2;;
    --promote-timeout) PROMOTE_TIMEOUT="$2"; shift 2;;
    --results) RESULTS_DIR="$2"; shift 2;;
    --keep-tmp) KEEP_TMP=1; shift;;
    --interval) CANARY_INTERVAL="$2"; shift 2;;
    --ttl) O_TTL="$2"; shift 2;;
    --loop-wait) O_LOOP="$2"; shift 2;;
    --retry-timeout) O_RETRY="$2"; shift 2;;
    -h|--help) usage 0;;
    *) echo "unknown argument: $1" >&2; usage 2;;
  esac
done

case "$PROFILE" in
  # Patroni's built-in defaults
  default) TTL=30 LOOP_WAIT=10 RETRY_TIMEOUT=10;;
  # Smallest values Patroni's validation accepts (docs + patroni/config.py
  # _validate_and_adjust_timeouts in Patroni >= 3.1 / 4.1.5):
  #   loop_wait >= 1, retry_timeout >= 3, ttl >= 20, loop_wait + 2*retry_timeout <= ttl
  # (Debian's 3.0.2 does not enforce these, newer Patroni silently raises smaller values.)
  tuned)   TTL=20 LOOP_WAIT=1 RETRY_TIMEOUT=3;;
  custom)  TTL="${O_TTL:?--ttl required}" LOOP_WAIT="${O_LOOP:?--loop-wait required}" RETRY_TIMEOUT="${O_RETRY:?--retry-timeout required}";;
  *) echo "unknown profile $PROFILE" >&2; exit 2;;
esac
[[ -n "$O_TTL" ]] && TTL="$O_TTL"; [[ -n "$O_LOOP" ]] && LOOP_WAIT="$O_LOOP"; [[ -n "$O_RETRY" ]] && RETRY_TIMEOUT="$O_RETRY"

fault_check "$FAULT" || exit 2
PY="$("$PYTHON" -c 'import sys; print(sys.executable)')"   # real interpreter (no pyenv shim) -> $! is python
"$PY" -c 'import psycopg' 2>/dev/null || { echo "psycopg 3 missing for $PY: run ./install.sh" >&2; exit 2; }
for b in "$PATRONI_BIN" "$ETCD_BIN" "$PG_BIN/postgres" /usr/bin/curl /usr/bin/setpriv; do
  [[ -x "$b" ]] || { echo "missing $b: run ./install.sh" >&2; exit 2; }
done
[[ $EUID -eq 0 ]] || { echo "run as root (processes are dropped to $PG_OS_USER)" >&2; exit 2; }
id "$PG_OS_USER" >/dev/null 2>&1 || { echo "OS user $PG_OS_USER missing" >&2; exit 2; }

PATRONI_VERSION="$("$PATRONI_BIN" --version 2>/dev/null | awk '{print $2}')"
ETCD_VERSION="$("$ETCD_BIN" --version 2>/dev/null | awk '/etcd Version/{print $3}')"
PG_VERSION="$("$PG_BIN/postgres" --version | awk '{print $3}')"
mkdir -p "$RESULTS_DIR"

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S.%3N)" "$*" >&2; }
now() { echo "$EPOCHREALTIME"; }   # bash >= 5 builtin: no fork, microseconds
pg_dsn() { echo "host=$LOOPBACK port=$1 user=postgres dbname=postgres connect_timeout=2"; }
psql_q() { timeout 5 psql "$(pg_dsn "$1")" -XAtq -c "$2" 2>/dev/null; }
port_busy() { ss -Hltn "( sport = :$1 )" 2>/dev/null | grep -q .; }
# every process whose cwd is the given PostgreSQL data dir (postmaster + all its children)
# (one find process instead of a readlink per pid: keeps the kill fast)
pids_in_datadir() {
  find /proc -mindepth 2 -maxdepth 2 -name cwd -lname "$1" 2>/dev/null | cut -d/ -f3
}
# running (not a zombie awaiting reaping)
alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null && [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]; }
# wait_until TIMEOUT_S CMD... : poll CMD every 0.2 s
wait_until() {
  local t_end=$(( $(date +%s) + $1 )); shift
  while (( $(date +%s) < t_end )); do "$@" && return 0; sleep 0.2; done
  return 1
}

# ----------------------------------------------------------------------------------------------
T="" ETCD_PID="" P1_PID="" P2_PID="" CANARY_PID="" PROBE_PID="" WD_PID=""
teardown() {
  local rc=$?
  trap '' INT TERM; trap - EXIT          # teardown itself must not be interrupted
  fault_end
  [[ -z "$T" ]] && return $rc
  log "teardown $T"
  if alive "$WD_PID"; then kill -TERM "$WD_PID" 2>/dev/null; wait "$WD_PID" 2>/dev/null; fi
  for v in PROBE_PID CANARY_PID; do
    local p="${!v}"; if alive "$p"; then kill -TERM "$p" 2>/dev/null; fi
  done
  # graceful patroni stop first (it stops its postgres), then hard kill leftovers
  for p in "$P1_PID" "$P2_PID"; do alive "$p" && kill -TERM "$p" 2>/dev/null; done
  local i
  for i in $(seq 1 100); do
    alive "$P1_PID" || alive "$P2_PID" || alive "$CANARY_PID" || alive "$PROBE_PID" || break
    sleep 0.2
  done
  for p in "$P1_PID" "$P2_PID" "$CANARY_PID" "$PROBE_PID"; do alive "$p" && kill -KILL "$p" 2>/dev/null; done
  for d in "$T/node1/data" "$T/node2/data"; do
    local pids; pids="$(pids_in_datadir "$d" | tr '\n' ' ')"
    [[ -n "${pids// }" ]] && { log "killing leftover postgres pids of $d: $pids"; kill -KILL $pids 2>/dev/null; }
  done
  if alive "$ETCD_PID"; then
    kill -TERM "$ETCD_PID" 2>/dev/null
    for i in $(seq 1 25); do alive "$ETCD_PID" || break; sleep 0.2; done
    alive "$ETCD_PID" && kill -KILL "$ETCD_PID" 2>/dev/null
  fi
  wait 2>/dev/null
  if ((KEEP_TMP)); then log "kept $T"; else rm -rf "$T"; fi
  T="" ETCD_PID="" P1_PID="" P2_PID="" CANARY_PID="" PROBE_PID="" WD_PID=""
  return $rc
}
on_signal() { log "interrupted"; teardown; exit 130; }

write_patroni_cfg() {  # node_idx pg_port api_port
  local n="$1" pgp="$2" api="$3" dir="$T/node$1"
  mkdir -p "$dir/pglog"
  cat > "$dir/patroni.yml" <<EOF
scope: bench
namespace: /failover-bench/
name: node$n
log:
  level: INFO
  format: '%(asctime)s %(levelname)s: %(message)s'
restapi:
  listen: $LOOPBACK:$api
  connect_address: $LOOPBACK:$api
etcd3:
  hosts: ['$LOOPBACK:$PORT_ETCD']
bootstrap:
  dcs:
    ttl: $TTL
    loop_wait: $LOOP_WAIT
    retry_timeout: $RETRY_TIMEOUT
    maximum_lag_on_failover: 1048576
    synchronous_mode: $( ((SYNC)) && echo true || echo false )
    synchronous_mode_strict: false
    postgresql:
      use_pg_rewind: false
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: 'on'
        max_connections: 50
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 128MB
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
postgresql:
  listen: $LOOPBACK:$pgp
  connect_address: $LOOPBACK:$pgp
  data_dir: $dir/data
  bin_dir: $PG_BIN
  pgpass: $dir/pgpass
  authentication:
    superuser: {username: postgres, password: postgres}
    replication: {username: replicator, password: replicator}
  parameters:
    unix_socket_directories: '$dir'
    logging_collector: 'on'
    log_directory: '$dir/pglog'
    log_filename: 'postgresql.log'
    log_line_prefix: '%m [%p] '
    log_timezone: 'UTC'
  pg_hba:
    - local all all trust
    - host all all $LOOPBACK/32 trust
    - host replication all $LOOPBACK/32 trust
watchdog:
  mode: 'off'
tags: {}
EOF
  chown -R "$PG_OS_USER:$PG_OS_USER" "$dir"
}

# NB: started directly (no function/subshell wrapper around the background command) so that
# $! is the patroni process itself: setpriv and env exec, they do not fork.
start_patroni() {  # node_idx result_varname
  local dir="$T/node$1"
  setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" --init-groups -- \
    env -i PATH=/usr/bin:/bin LANG=C.UTF-8 HOME="$dir" "$PATRONI_BIN" "$dir/patroni.yml" \
    > "$dir/patroni.log" 2>&1 < /dev/null &
  printf -v "$2" '%s' "$!"
  disown "$!"   # no "Killed ..." job chatter when we SIGKILL it on purpose
}
# assert that PID runs the expected program (guards against recording a wrapper's PID)
pid_is() { tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -q -- "$2"; }

is_primary() { [[ "$(psql_q "$1" 'select pg_is_in_recovery()')" == "f" ]]; }
is_replica() { [[ "$(psql_q "$1" 'select pg_is_in_recovery()')" == "t" ]]; }
etcd_healthy() { curl -fsS -m 2 "http://$LOOPBACK:$PORT_ETCD/health" 2>/dev/null | grep -q '"health":"true"'; }
replica_ready() {  # leader_port
  local q="select count(*) from pg_stat_replication where state='streaming'"
  ((SYNC)) && q="$q and sync_state='sync'"
  [[ "$(psql_q "$1" "$q")" == "1" ]] || return 1
  # Patroni must also have published the sync standby in the DCS, otherwise it will refuse
  # to promote the replica (Patroni-specific readiness, not part of the measurement).
  if ((SYNC)); then
    curl -fsS -m 2 "http://$LOOPBACK:$PORT_API1/cluster" 2>/dev/null | grep -q '"sync_standby"' || return 1
  fi
  return 0
}
canary_acked() { grep -q '"t_ack"' "$T/canary.jsonl" 2>/dev/null; }
acked_after() {  # fault_ts: any ack later than the fault?
  tail -n 200 "$T/canary.jsonl" 2>/dev/null | "$PY" -c '
import sys, json
f = float(sys.argv[1])
for l in sys.stdin:
    try: o = json.loads(l)
    except ValueError: continue
    if o.get("t_ack") and o["t_ack"] > f: sys.exit(0)
sys.exit(1)' "$1"
}

run_once() {
  local idx="$1" mode; mode=$( ((SYNC)) && echo sync || echo async )
  local run_id="$RUN_ID" me="$BASHPID"
  local rc=0
  trap teardown EXIT; trap on_signal INT TERM
  for p in "$PORT_PG1" "$PORT_PG2" "$PORT_API1" "$PORT_API2" "$PORT_ETCD" "$PORT_ETCD_PEER"; do
    if port_busy "$p"; then log "port $p already in use - aborting"; return 3; fi
  done
  T="$(mktemp -d /tmp/failover-bench.XXXXXX)"
  chown "$PG_OS_USER:$PG_OS_USER" "$T"; chmod 700 "$T"
  # per-run watchdog: bounded runtime no matter what
  ( trap 'kill $sp 2>/dev/null; exit 0' TERM; sleep "$RUN_HARD_LIMIT" & sp=$!; wait $sp
    echo "[watchdog] run exceeded ${RUN_HARD_LIMIT}s - aborting" >&2; kill -TERM "$me" ) &
  WD_PID=$!
  log "run $run_id: profile=$PROFILE ttl=$TTL loop_wait=$LOOP_WAIT retry_timeout=$RETRY_TIMEOUT sync=$SYNC tmp=$T"

  # ---- etcd ----
  local arch; arch="$(dpkg --print-architecture 2>/dev/null || uname -m)"
  local extra_env=(); [[ "$arch" != amd64 ]] && extra_env=(ETCD_UNSUPPORTED_ARCH="$arch")
  mkdir -p "$T/etcd"; chown "$PG_OS_USER:$PG_OS_USER" "$T/etcd"
  setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" --init-groups -- \
    env -i PATH=/usr/bin:/bin HOME="$T" "${extra_env[@]}" "$ETCD_BIN" --name bench --data-dir "$T/etcd/data" \
    --listen-client-urls "http://$LOOPBACK:$PORT_ETCD" --advertise-client-urls "http://$LOOPBACK:$PORT_ETCD" \
    --listen-peer-urls "http://$LOOPBACK:$PORT_ETCD_PEER" --initial-advertise-peer-urls "http://$LOOPBACK:$PORT_ETCD_PEER" \
    --initial-cluster "bench=http://$LOOPBACK:$PORT_ETCD_PEER" --initial-cluster-state new \
    --initial-cluster-token "bench-$$" > "$T/etcd/etcd.log" 2>&1 < /dev/null &
  ETCD_PID=$!
  sleep 0.1; pid_is "$ETCD_PID" "$ETCD_BIN" || { log "etcd pid $ETCD_PID is not etcd"; return 4; }
  wait_until 30 etcd_healthy || { log "etcd not healthy"; tail -20 "$T/etcd/etcd.log" >&2; return 4; }
  log "etcd $ETCD_VERSION up (pid $ETCD_PID)"

  # ---- patroni node1 (bootstraps), then node2 (replica) ----
  write_patroni_cfg 1 "$PORT_PG1" "$PORT_API1"
  write_patroni_cfg 2 "$PORT_PG2" "$PORT_API2"
  start_patroni 1 P1_PID
  sleep 0.1; pid_is "$P1_PID" patroni || { log "pid $P1_PID is not patroni"; return 4; }
  wait_until 90 is_primary "$PORT_PG1" || { log "node1 did not become primary"; tail -30 "$T/node1/patroni.log" >&2; return 4; }
  log "node1 primary (patroni pid $P1_PID)"
  start_patroni 2 P2_PID
  sleep 0.1; pid_is "$P2_PID" patroni || { log "pid $P2_PID is not patroni"; return 4; }
  wait_until 150 replica_ready "$PORT_PG1" || { log "replica not ready"; tail -30 "$T/node2/patroni.log" >&2; return 4; }
  log "node2 replica streaming$( ((SYNC)) && echo ' (sync standby)') (patroni pid $P2_PID)"

  # ---- canary ----
  local dsn="host=$LOOPBACK,$LOOPBACK port=$PORT_PG1,$PORT_PG2 target_session_attrs=read-write user=postgres dbname=postgres"
  "$PY" "$SHARED/canary.py" write --dsn "$dsn" --log "$T/canary.jsonl" --interval "$CANARY_INTERVAL" \
    --max-duration "$RUN_HARD_LIMIT" > "$T/canary.out" 2>&1 < /dev/null &
  CANARY_PID=$!
  wait_until 30 canary_acked || { log "canary never got an ack"; cat "$T/canary.out" >&2; return 5; }
  # random extra delay so the fault lands at a random phase of the controller's loop /
  # lease-refresh cycle (otherwise every run would hit the same phase and hide the variance)
  local steady; steady="$(awk -v s="$STEADY" -v j="$STEADY_JITTER" -v r="$RANDOM" 'BEGIN{printf "%.3f", s + j*r/32768}')"
  echo "$steady" > "$T/steady_s"
  log "canary running (pid $CANARY_PID); steady for ${steady}s"
  sleep "$steady"

  # ---- who is the leader right now? ----
  local leader="" replica_port="" leader_dir="" leader_patroni=""
  if is_primary "$PORT_PG1"; then leader=1; replica_port=$PORT_PG2; leader_patroni=$P1_PID
  elif is_primary "$PORT_PG2"; then leader=2; replica_port=$PORT_PG1; leader_patroni=$P2_PID
  else log "no primary before fault?"; return 6; fi
  leader_dir="$T/node$leader/data"
  is_replica "$replica_port" || { log "replica not in recovery before fault"; return 6; }

  # ---- neutral promotion probe on the surviving node ----
  "$PY" "$SHARED/canary.py" wait-primary --dsn "$(pg_dsn "$replica_port")" --timeout "$PROMOTE_TIMEOUT" \
    --interval 0.02 --ready-file "$T/probe.ready" --out "$T/probe.json" > "$T/probe.out" 2>&1 < /dev/null &
  PROBE_PID=$!
  wait_until 15 test -s "$T/probe.ready" || { log "probe not ready"; cat "$T/probe.out" >&2; return 6; }

  # ---- fault (faults.sh): the leader's patroni + whole postgres instance ----
  local victims; victims="$leader_patroni $(pids_in_datadir "$leader_dir" | tr '\n' ' ')"
  pid_is "$leader_patroni" patroni || { log "leader patroni pid $leader_patroni is not patroni"; return 6; }
  cat /proc/loadavg > "$T/loadavg_at_fault"
  local fault_ts fault_ts_after leader_pg_port leader_api_port
  leader_pg_port=$( ((leader == 1)) && echo "$PORT_PG1" || echo "$PORT_PG2" )
  leader_api_port=$( ((leader == 1)) && echo "$PORT_API1" || echo "$PORT_API2" )
  if [[ "$FAULT" == switchover ]]; then
    FAULT_TS="$EPOCHREALTIME"
    setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" --init-groups -- env -i PATH=/usr/bin:/bin HOME="$T" \
      patronictl -c "$T/node$leader/patroni.yml" switchover --leader "node$leader" \
      --candidate "node$(( leader == 1 ? 2 : 1 ))" --force > "$T/switchover.out" 2>&1 \
      || log "WARNING: switchover failed: $(tail -3 "$T/switchover.out")"
    FAULT_TS_AFTER="$EPOCHREALTIME"
  else
    fault_begin "$FAULT" "$victims" "$leader_pg_port $leader_api_port"
  fi
  fault_ts="$FAULT_TS" fault_ts_after="$FAULT_TS_AFTER"
  echo "$fault_ts" > "$T/fault_ts"; echo "$fault_ts_after" > "$T/fault_ts_after"
  log "FAULT at $fault_ts: $FAULT node$leader patroni+postgres pids: $victims (loadavg $(cut -d' ' -f1-3 "$T/loadavg_at_fault"))"
  if [[ "$FAULT" == kill ]]; then
    [[ $leader == 1 ]] && P1_PID="" || P2_PID=""
    # sweep stragglers forked by the postmaster in the microseconds before it died
    sleep 0.05; local left; left="$(pids_in_datadir "$leader_dir" | tr '\n' ' ')"
    [[ -n "${left// }" ]] && { log "straggler pids $left"; kill -KILL $left 2>/dev/null; }
    for p in $victims; do alive "$p" && log "WARNING: victim $p still alive"; done
  fi
  if [[ "$FAULT" == hang || "$FAULT" == silent ]]; then
    sleep "$(awk -v f="$fault_ts" -v d="$FAULT_FOR" -v n="$EPOCHREALTIME" 'BEGIN{r=f+d-n; printf "%.3f", (r>0?r:0)}')"
    echo "$EPOCHREALTIME" > "$T/fault_end_ts"
    fault_end
    log "fault ended after ${FAULT_FOR}s"
    # Patroni may rightly not fail over within the fault: the probe has had its time.
    kill -TERM "$PROBE_PID" 2>/dev/null
  fi

  # ---- wait for promotion (probe exits on promotion or after PROMOTE_TIMEOUT) ----
  wait "$PROBE_PID"; PROBE_PID=""
  local promoted_ts=""
  promoted_ts="$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("promoted_detected_at") or "")' "$T/probe.json" 2>/dev/null)"
  if [[ -n "$promoted_ts" ]]; then
    log "replica promoted after $("$PY" -c "print(round($promoted_ts-$fault_ts,3))")s"
    # need at least one ack after the fault for the RTO figure, then a short post period
    wait_until 30 acked_after "$fault_ts" || log "WARNING: no ack after fault within 30s of promotion"
    sleep "$POST"
  elif [[ "$FAULT" == hang || "$FAULT" == silent ]]; then
    log "replica not promoted during the ${FAULT_FOR}s $FAULT; clients wait for the old leader"
    wait_until 30 acked_after "$fault_ts" || log "WARNING: no ack after the fault within 30s"
    sleep "$POST"
  else
    log "WARNING: replica NOT promoted within ${PROMOTE_TIMEOUT}s"; rc=7
  fi
  kill -TERM "$CANARY_PID" 2>/dev/null
  wait_until 10 bash -c "! kill -0 $CANARY_PID 2>/dev/null" || kill -KILL "$CANARY_PID" 2>/dev/null
  wait "$CANARY_PID" 2>/dev/null; CANARY_PID=""

  # ---- verify (neutral) ----
  "$PY" "$SHARED/canary.py" verify --dsn "$dsn" --log "$T/canary.jsonl" --fault-ts "@$T/fault_ts" \
    --out "$T/verify.json" --quiet --connect-wait 20 > "$T/verify.out" 2>&1
  cat "$T/verify.out" >&2

  # ---- collect result JSON (+ Patroni-specific timings from its own logs) ----
  local survivor=$(( leader == 1 ? 2 : 1 ))
  mkdir -p "$RESULTS_DIR/$run_id"
  "$PY" - "$T" "$survivor" "$leader" "$fault_ts" "$RESULTS_DIR/$run_id.json" <<'PYEOF'
import json, sys, re, time, datetime, os
T, surv, leader, fault_ts, out = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
def load(p):
    try:
        with open(p) as f: return json.load(f)
    except Exception: return None
probe = load(f"{T}/probe.json") or {}
verify = load(f"{T}/verify.json") or {}
def patroni_ts(line):   # '2026-11-22 18:30:01,123 INFO: ...' (local time)
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ", line)
    if not m: return None
    return time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000.0
def pg_ts(line):        # '2026-11-22 18:30:01.123 UTC [pid] ...'
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC ", line)
    if not m: return None
    return datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc).timestamp()
def first_after(path, parse, pattern):
    try:
        for l in open(path, errors="replace"):
            t = parse(l)
            if t is not None and t >= fault_ts - 0.001 and pattern in l:
                return t
    except FileNotFoundError: pass
    return None
plog = f"{T}/node{surv}/patroni.log"; pglog = f"{T}/node{surv}/pglog/postgresql.log"
t_race  = first_after(plog, patroni_ts, "Request failed to node" + leader)     # leader race started (lock gone)
t_lock  = first_after(plog, patroni_ts, "acquiring session lock")               # won the leader lock
t_prom  = first_after(plog, patroni_ts, "cleared rewind state after becoming the leader")  # pg_ctl promote -W returned
t_pgreq = first_after(pglog, pg_ts, "received promote request")
t_pgrdy = first_after(pglog, pg_ts, "database system is ready to accept connections")
d = lambda t: None if t is None else round(t - fault_ts, 3)
promoted = probe.get("promoted_detected_at")
res = {
  "system": "patroni", "system_version": os.environ.get("PATRONI_VERSION"),
  "dcs": "etcd " + (os.environ.get("ETCD_VERSION") or "?"), "postgres": os.environ.get("PG_VERSION"),
  "profile": os.environ["PROFILE"] + "/" + os.environ["FAULT"], "sync": os.environ["SYNC"] == "1", "run": int(os.environ["RUN_IDX"]),
  "run_id": os.environ["RUN_ID"], "started_at": float(os.environ["RUN_START"]),
  "params": {"ttl": int(os.environ["TTL"]), "loop_wait": int(os.environ["LOOP_WAIT"]),
             "retry_timeout": int(os.environ["RETRY_TIMEOUT"])},
  "fault": {"ts": fault_ts, "kind": os.environ["FAULT"], "for_s": float(os.environ["FAULT_FOR"]) if os.environ["FAULT"] in ("hang", "silent") else None,
            "end_ts": float(open(f"{T}/fault_end_ts").read()) if os.path.exists(f"{T}/fault_end_ts") else None,
            "node": "node" + leader,
            "kill_call_s": round(float(open(f"{T}/fault_ts_after").read()) - fault_ts, 6) if os.path.exists(f"{T}/fault_ts_after") else None,
            "loadavg": open(f"{T}/loadavg_at_fault").read().split()[:3] if os.path.exists(f"{T}/loadavg_at_fault") else None},
  "steady_s": float(open(f"{T}/steady_s").read()) if os.path.exists(f"{T}/steady_s") else None,
  "kill_to_promoted_s": d(promoted), "promoted_detected_at": promoted,
  "probe_resolution_s": probe.get("resolution_s"),
  "verify": verify, "probe": probe,
  "system_specific": {
     "kill_to_leader_race_s": d(t_race), "kill_to_lock_acquired_s": d(t_lock),
     "kill_to_patroni_promote_done_s": d(t_prom),
     "kill_to_pg_promote_request_s": d(t_pgreq), "kill_to_pg_ready_s": d(t_pgrdy)},
}
with open(out, "w") as f: json.dump(res, f, indent=2)
v = verify
print(f"RESULT {res['run_id']}: kill->promoted={res['kill_to_promoted_s']}s "
      f"kill->lock={d(t_lock)}s RTO(max gap)={v.get('rto_max_gap_s')}s kill->first ack={v.get('fault_to_first_ack_s')}s "
      f"lost_acked={v.get('lost_acked')}")
PYEOF
  # keep the raw evidence next to the result
  cp "$T/node1/patroni.log" "$RESULTS_DIR/$run_id/node1-patroni.log" 2>/dev/null
  cp "$T/node2/patroni.log" "$RESULTS_DIR/$run_id/node2-patroni.log" 2>/dev/null
  cp "$T/node1/pglog/postgresql.log" "$RESULTS_DIR/$run_id/node1-postgresql.log" 2>/dev/null
  cp "$T/node2/pglog/postgresql.log" "$RESULTS_DIR/$run_id/node2-postgresql.log" 2>/dev/null
  cp "$T/etcd/etcd.log" "$T/probe.json" "$T/verify.json" "$T/fault_ts" "$RESULTS_DIR/$run_id/" 2>/dev/null
  gzip -c "$T/canary.jsonl" > "$RESULTS_DIR/$run_id/canary.jsonl.gz" 2>/dev/null
  return $rc
}

export FAULT FAULT_FOR PATRONI_VERSION ETCD_VERSION PG_VERSION PROFILE SYNC TTL LOOP_WAIT RETRY_TIMEOUT
overall=0
for i in $(seq 1 "$RUNS"); do
  export RUN_IDX="$i" RUN_START="$(now)"
  RUN_ID="patroni-${PROFILE}-${FAULT}-$( ((SYNC)) && echo sync || echo async )-$(date -u +%Y%m%dT%H%M%SZ)-r${i}"
  export RUN_ID
  ( run_once "$i" ) & child=$!
  trap 'kill -TERM $child 2>/dev/null; wait $child; exit 130' INT TERM
  wait "$child"; rc=$?
  trap - INT TERM
  ((rc)) && { log "run $i failed rc=$rc"; overall=$rc; }
done
exit $overall
