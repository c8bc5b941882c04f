#!/usr/bin/env bash
# run-lifeboat.sh - Lifeboat adapter for the neutral failover benchmark in
# ../../../shared/bench/failover (canary.py is the instrument, run-patroni.sh the anchor).
#
# Per run, in a fresh temp dir: 2 x PostgreSQL 15 (us-east-1 primary, eu-west-1 streaming
# standby) on free loopback ports, `lifeboat run` (controller + endpoint) with the default
# settings of examples/two-region.toml; canary.py writes through Lifeboat's endpoint; after a
# steady period with random jitter, every process of the primary's PostgreSQL instance gets
# SIGKILL in one kill(1) call (the same fault as run-patroni.sh: node loss); canary.py
# wait-primary watches the standby; canary.py verify counts lost acknowledged writes. The
# result JSON has the same shape, so `canary.py report` puts both systems side by side.
#
# The difference in fault scope, stated plainly: Patroni runs an agent on each database node,
# and the fault kills the leader's agent with its PostgreSQL. Lifeboat has no agent on the
# database nodes: its controller runs beside them (like etcd in Patroni's set-up) and
# survives the fault. Controller loss is covered by tests (a daemon killed mid-failover).
#
# Usage: ./run-lifeboat.sh [--fault kill|hang|silent|switchover] [--fault-for S] [--sync]
#                          [--runs N] [--steady S] [--steady-jitter S] [--post S]
#                          [--promote-timeout S] [--results DIR] [--keep-tmp] [--interval S]
#        --fault: kill (default; SIGKILL, as above), hang (SIGSTOP of every process of the
#            primary for --fault-for, 10 s), silent (the primary's packets dropped for
#            --fault-for), switchover (`lifeboat switchover --to eu-west-1`: the planned write
#            pause). The faults are in faults.sh, shared with run-patroni.sh.
#        --fault drill-region: `lifeboat drill run region` (scenario region-outage: every port
#            of region us-east silent for --fault-for, then undone, rejoin and failback),
#            canary.py measuring beside the drill's own canary (bench/drills/).
#        --notify: a webhook notifier (min-severity info) posts to a recording receiver
#            (crates/lifeboat-testkit/src/receiver.py); the result adds fault_to_first_notice_s,
#            the fault to the receipt of the incident's first notice (bench/notify/).
#        ./run-lifeboat.sh --storm N [--storm-rate R]   # instead of a fault: a switchover,
#            then N operator updates of its incident as fast as the API takes them, with two
#            webhook notifiers (one receiver up, one down until the storm is delivered to the
#            first) and a Slack one; max-per-minute R for the webhooks (default: their default);
#            writes results-storm/<run_id>.json (bench/notify/)
#        ./run-lifeboat.sh --stalls N [--stall-ms MS]   # instead of the kill: SIGSTOP the
#            primary's processes for MS (300) ms, SIGCONT, N times 1 s apart; counts failovers
#            (expected: 0) and writes results-stall/<run_id>.json
set -uo pipefail
export LC_ALL=C

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared/bench/failover}"
PYTHON="${PYTHON:-python3}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_OS_USER="${PG_OS_USER:-postgres}"
LIFEBOAT="${LIFEBOAT:-$ROOT/target/release/lifeboat}"
FAULT=kill FAULT_FOR=10 NOTIFY=0 STORM=0 STORM_RATE="" STALLS=0 STALL_MS=300 SYNC=0 RUNS=1 STEADY=10 STEADY_JITTER=10 POST=5 PROMOTE_TIMEOUT=90 KEEP_TMP=0 CANARY_INTERVAL=0.010
RUN_HARD_LIMIT=300
RESULTS_DIR="$HERE/results"

while (($#)); do
  case "$1" in
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
    --stalls) STALLS="$2"; shift 2;;
    --notify) NOTIFY=1; shift;;
    --storm) STORM="$2"; shift 2;;
    --storm-rate) STORM_RATE="$2"; shift 2;;
    --fault) FAULT="$2"; shift 2;;
    --fault-for) FAULT_FOR="$2"; shift 2;;
    --stall-ms) STALL_MS="$2"; shift 2;;
    -h|--help) awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$0"; exit 0;;
    *) echo "unknown argument: $1" >&2; exit 2;;
  esac
done

((STALLS)) && [[ "$RESULTS_DIR" == "$HERE/results" ]] && RESULTS_DIR="$HERE/results-stall"
((STORM)) && [[ "$RESULTS_DIR" == "$HERE/results" ]] && RESULTS_DIR="$HERE/results-storm"
RECEIVER_PY="$ROOT/crates/lifeboat-testkit/src/receiver.py"
T="" LB_PID="" CANARY_PID="" PROBE_PID="" RX_PID="" RX2_PID=""
# shellcheck source=faults.sh
. "$HERE/faults.sh"
# shellcheck source=common.sh
. "$HERE/common.sh"
if [[ "$FAULT" == drill-region ]]; then
  command -v nft >/dev/null || { echo "nft missing: apt-get install nftables" >&2; exit 2; }
else
  fault_check "$FAULT" || exit 2
fi
PY="$("$PYTHON" -c 'import sys; print(sys.executable)')"
"$PY" -c 'import psycopg' 2>/dev/null || { echo "psycopg 3 missing: run $SHARED/install.sh" >&2; exit 2; }
[[ -f "$SHARED/canary.py" ]] || { echo "canary.py not found in $SHARED (set SHARED=)" >&2; exit 2; }
[[ -x "$LIFEBOAT" ]] || { echo "build first: cargo build --release -p lifeboat" >&2; exit 2; }
[[ -x "$PG_BIN/postgres" ]] || { echo "PostgreSQL not found in $PG_BIN (set PG_BIN=)" >&2; exit 2; }
[[ $EUID -eq 0 ]] || { echo "run as root (PostgreSQL runs as $PG_OS_USER)" >&2; exit 2; }
LIFEBOAT_VERSION="$("$LIFEBOAT" --version | awk '{print $2}')"
PG_VERSION="$("$PG_BIN/postgres" --version | awk '{print $3}')"
mkdir -p "$RESULTS_DIR"

as_pg() { setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" --init-groups -- "$@"; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pg_dsn() { echo "host=127.0.0.1 port=$1 user=postgres dbname=postgres connect_timeout=2"; }
pids_in_datadir() { find /proc -mindepth 2 -maxdepth 2 -name cwd -lname "$1" 2>/dev/null | cut -d/ -f3; }
status_has() { curl -fsS -m 2 "http://127.0.0.1:$API/v1/status?service=bench" 2>/dev/null | "$PY" -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if ($1) else 1)" 2>/dev/null; }

teardown() {
  local rc=$?
  trap '' INT TERM; trap - EXIT
  fault_end
  [[ -z "$T" ]] && return $rc
  for p in "$PROBE_PID" "$CANARY_PID" "$LB_PID" "$RX_PID" "$RX2_PID"; do alive "$p" && kill -TERM "$p" 2>/dev/null; done
  for _ in $(seq 1 100); do alive "$LB_PID" || alive "$CANARY_PID" || alive "$PROBE_PID" || alive "$RX_PID" || alive "$RX2_PID" || break; sleep 0.1; done
  for p in "$PROBE_PID" "$CANARY_PID" "$LB_PID" "$RX_PID" "$RX2_PID"; do alive "$p" && kill -KILL "$p" 2>/dev/null; done
  for d in "$T/us-east-1" "$T/eu-west-1"; do
    [[ -f "$d/postmaster.pid" ]] && as_pg "$PG_BIN/pg_ctl" stop -D "$d" -m fast -w -t 20 >/dev/null 2>&1
    local left; left="$(pids_in_datadir "$d" | tr '\n' ' ')"
    [[ -n "${left// }" ]] && kill -KILL $left 2>/dev/null
  done
  wait 2>/dev/null
  if ((KEEP_TMP)); then log "kept $T"; else rm -rf "$T"; fi
  T="" LB_PID="" CANARY_PID="" PROBE_PID="" RX_PID="" RX2_PID=""
  return $rc
}

run_once() {
  local run_id="$RUN_ID" rc=0
  trap teardown EXIT; trap 'teardown; exit 130' INT TERM
  T="$(mktemp -d /tmp/lifeboat-bench.XXXXXX)"; chown "$PG_OS_USER:$PG_OS_USER" "$T"; chmod 755 "$T"
  local P1 P2 EP; P1="$(free_port)"; P2="$(free_port)"; EP="$(free_port)"; API="$(free_port)"
  log "run $run_id: sync=$SYNC tmp=$T pg=$P1/$P2 endpoint=$EP"

  as_pg "$PG_BIN/initdb" -D "$T/us-east-1" -U postgres --auth=trust -E UTF8 --data-checksums >/dev/null || return 4
  cat >> "$T/us-east-1/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
wal_level = replica
hot_standby = on
wal_log_hints = on
max_wal_senders = 10
wal_keep_size = '128MB'
max_connections = 50
EOF
  as_pg "$PG_BIN/pg_ctl" start -D "$T/us-east-1" -l "$T/us-east-1.log" -w -t 60 -o "-p $P1 -k ''" >/dev/null || return 4
  as_pg "$PG_BIN/pg_basebackup" -d "host=127.0.0.1 port=$P1 user=postgres application_name=eu-west-1" \
    -D "$T/eu-west-1" -X stream -c fast -R >/dev/null || return 4
  echo "primary_conninfo = 'host=127.0.0.1 port=$P1 user=postgres application_name=eu-west-1'" >> "$T/eu-west-1/postgresql.auto.conf"
  as_pg "$PG_BIN/pg_ctl" start -D "$T/eu-west-1" -l "$T/eu-west-1.log" -w -t 60 -o "-p $P2 -k ''" >/dev/null || return 4

  local replication; replication=$( ((SYNC)) && echo sync || echo async )
  cat > "$T/lifeboat.toml" <<EOF
[controller]
api-listen = "127.0.0.1:$API"
state-dir = "state"
api-token-env = "LIFEBOAT_API_TOKEN"
[tiers.gold]
rto = "30s"
rpo = "1s"
[services.bench]
kind = "postgres"
tier = "gold"
[services.bench.endpoint]
listen = "127.0.0.1:$EP"
[services.bench.failover]
replication = "$replication"
[services.bench.regions.us-east]
role = "primary"
priority = 100
[[services.bench.regions.us-east.nodes]]
name = "us-east-1"
host = "127.0.0.1"
port = $P1
control = { data-dir = "$T/us-east-1" }
[services.bench.regions.eu-west]
role = "standby"
priority = 50
[[services.bench.regions.eu-west.nodes]]
name = "eu-west-1"
host = "127.0.0.1"
port = $P2
control = { data-dir = "$T/eu-west-1" }
[drills.region]
scenario = "region-outage"
service = "bench"
region = "us-east"
duration = "${FAULT_FOR}s"
canary-interval = "10ms"
EOF
  if ((NOTIFY || STORM)); then
    RXP="$(free_port)"; RX2P="$(free_port)"
    export RECEIVER_SECRET="bench-$RANDOM-secret" BENCH_SLACK_URL="http://127.0.0.1:$RXP/slack/bench"
    mkdir -p "$T/rx" "$T/rx2"
    "$PY" "$RECEIVER_PY" "$RXP" "$T/rx" > /dev/null 2> "$T/rx/receiver.log" < /dev/null &
    RX_PID=$!
    wait_until 15 bash -c "exec 3<>/dev/tcp/127.0.0.1/$RXP" 2>/dev/null || { log "receiver did not listen"; return 4; }
    local rate=""; [[ -n "$STORM_RATE" ]] && rate="max-per-minute = $STORM_RATE"
    cat >> "$T/lifeboat.toml" <<EOF
[notify.bench]
kind = "webhook"
url = "http://127.0.0.1:$RXP/hook"
secret-env = "RECEIVER_SECRET"
min-severity = "info"
$rate
EOF
    if ((STORM)); then
      cat >> "$T/lifeboat.toml" <<EOF
[notify.down]
kind = "webhook"
url = "http://127.0.0.1:$RX2P/hook"
secret-env = "RECEIVER_SECRET"
min-severity = "info"
timeout = "1s"
$rate
[notify.chat]
kind = "slack"
url-env = "BENCH_SLACK_URL"
min-severity = "info"
EOF
    fi
  fi
  LIFEBOAT_API_TOKEN="$(head -c 18 /dev/urandom | base64)"; export LIFEBOAT_API_TOKEN
  "$LIFEBOAT" run -c "$T/lifeboat.toml" > "$T/lifeboat.log" 2>&1 < /dev/null &
  LB_PID=$!
  wait_until 30 status_has 's["endpoint"]["routes_to"] == "us-east-1"' || { log "endpoint never routed"; tail -20 "$T/lifeboat.log" >&2; return 4; }
  if ((SYNC)); then
    wait_until 30 status_has 'any(n["name"] == "eu-west-1" and n["sync_state"] == "sync" for n in s["nodes"])' \
      || { log "standby never synchronous"; return 4; }
  fi
  log "lifeboat $LIFEBOAT_VERSION up (pid $LB_PID), endpoint routes to us-east-1"
  if ((STORM)); then storm_run; return $?; fi

  local dsn; dsn="$(pg_dsn "$EP")"
  "$PY" "$SHARED/canary.py" write --dsn "$dsn" --log "$T/canary.jsonl" --interval "$CANARY_INTERVAL" \
    --max-duration "$RUN_HARD_LIMIT" > "$T/canary.out" 2>&1 < /dev/null &
  CANARY_PID=$!
  wait_until 30 canary_acked || { log "canary never got an ack"; cat "$T/canary.out" >&2; return 5; }
  local steady; steady="$(awk -v s="$STEADY" -v j="$STEADY_JITTER" -v r="$RANDOM" 'BEGIN{printf "%.3f", s + j*r/32768}')"
  echo "$steady" > "$T/steady_s"
  log "canary running; steady for ${steady}s"
  sleep "$steady"

  if ((STALLS)); then stall_run; return $?; fi

  "$PY" "$SHARED/canary.py" wait-primary --dsn "$(pg_dsn "$P2")" --timeout "$PROMOTE_TIMEOUT" \
    --interval 0.02 --ready-file "$T/probe.ready" --out "$T/probe.json" > "$T/probe.out" 2>&1 < /dev/null &
  PROBE_PID=$!
  wait_until 15 test -s "$T/probe.ready" || { log "probe not ready"; return 6; }

  local victims; victims="$(pids_in_datadir "$T/us-east-1" | tr '\n' ' ')"
  [[ -n "${victims// }" ]] || { log "no primary processes found"; return 6; }
  cat /proc/loadavg > "$T/loadavg_at_fault"
  if [[ "$FAULT" == drill-region ]]; then
    # Lifeboat's own drill applies the fault (every port of region us-east silent), holds it
    # for --fault-for, undoes it and fails back; canary.py measures the same fault beside it.
    local t0="$EPOCHREALTIME"
    "$LIFEBOAT" drill run region --json --api "http://127.0.0.1:$API" > "$T/drill.json" 2> "$T/drill.err" \
      || log "WARNING: the drill did not pass: $(tail -3 "$T/drill.err")"
    echo "$t0 $EPOCHREALTIME" > "$T/drill_wall"
    FAULT_TS="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["fault_at_ms"] / 1000)' "$T/drill.json")" \
      || { log "no fault time in the drill report"; return 6; }
    local drill_id; drill_id="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$T/drill.json")"
    "$LIFEBOAT" drill report "$drill_id" --api "http://127.0.0.1:$API" > "$T/drill.md" 2>/dev/null
    "$LIFEBOAT" drill report "$drill_id" --svg "$T/drill.svg" --api "http://127.0.0.1:$API" > /dev/null 2>&1
    FAULT_TS_AFTER="$FAULT_TS"
  elif [[ "$FAULT" == switchover ]]; then
    FAULT_TS="$EPOCHREALTIME"
    "$LIFEBOAT" switchover --to eu-west-1 --api "http://127.0.0.1:$API" > "$T/switchover.out" 2>&1 \
      || log "WARNING: switchover failed: $(tail -3 "$T/switchover.out")"
    FAULT_TS_AFTER="$EPOCHREALTIME"
  else
    fault_begin "$FAULT" "$victims" "$P1"
  fi
  local fault_ts="$FAULT_TS"
  echo "$FAULT_TS" > "$T/fault_ts"; echo "$FAULT_TS_AFTER" > "$T/fault_ts_after"
  log "FAULT at $fault_ts: $FAULT us-east-1 (postgres pids: $victims)"
  if [[ "$FAULT" == kill ]]; then
    sleep 0.05; local left; left="$(pids_in_datadir "$T/us-east-1" | tr '\n' ' ')"
    [[ -n "${left// }" ]] && kill -KILL $left 2>/dev/null
  fi
  if [[ "$FAULT" == hang || "$FAULT" == silent ]]; then
    # The fault lasts its whole length whatever happens; was the failover done within it?
    sleep "$(awk -v f="$fault_ts" -v d="$FAULT_FOR" -v n="$EPOCHREALTIME" 'BEGIN{r=f+d-n; printf "%.3f", (r>0?r:0)}')"
    echo "$EPOCHREALTIME" > "$T/fault_end_ts"
    fault_end
    log "fault ended after ${FAULT_FOR}s"
  fi

  wait "$PROBE_PID"; PROBE_PID=""
  if "$PY" -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("promoted_detected_at") else 1)' "$T/probe.json" 2>/dev/null; then
    wait_until 30 acked_after "$fault_ts" || log "WARNING: no ack after the fault within 30s"
    sleep "$POST"
  else
    log "WARNING: standby NOT promoted within ${PROMOTE_TIMEOUT}s"; rc=7
  fi
  kill -TERM "$CANARY_PID" 2>/dev/null
  wait_until 10 bash -c "! kill -0 $CANARY_PID 2>/dev/null" || kill -KILL "$CANARY_PID" 2>/dev/null
  wait "$CANARY_PID" 2>/dev/null; CANARY_PID=""

  "$PY" "$SHARED/canary.py" verify --dsn "$dsn" --log "$T/canary.jsonl" --fault-ts "@$T/fault_ts" \
    --out "$T/verify.json" --quiet --connect-wait 20 > "$T/verify.out" 2>&1
  cat "$T/verify.out" >&2
  "$LIFEBOAT" incident list --api "http://127.0.0.1:$API" --json > "$T/incidents.json" 2>/dev/null

  mkdir -p "$RESULTS_DIR/$run_id"
  "$PY" - "$T" "$fault_ts" "$RESULTS_DIR/$run_id.json" <<'PYEOF'
import json, sys, os
T, fault_ts, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
def load(p):
    try:
        with open(p) as f: return json.load(f)
    except Exception: return None
probe = load(f"{T}/probe.json") or {}
verify = load(f"{T}/verify.json") or {}
incidents = load(f"{T}/incidents.json") or []
inc = next((i for i in incidents if i.get("kind") in ("failover", "switchover")), {})
fig = inc.get("figures", {})
ms = lambda k: None if fig.get(k) is None else fig[k] / 1000.0
promoted = probe.get("promoted_detected_at")
res = {
  "system": "lifeboat", "system_version": os.environ.get("LIFEBOAT_VERSION"),
  "dcs": "none (embedded store)", "postgres": os.environ.get("PG_VERSION"),
  "profile": "default/" + os.environ["FAULT"], "sync": os.environ["SYNC"] == "1", "run": int(os.environ["RUN_IDX"]),
  "run_id": os.environ["RUN_ID"], "started_at": float(os.environ["RUN_START"]),
  "params": {"probe_interval": "100ms", "failure_threshold": 3, "probe_timeout": "1s"},
  "fault": {"ts": fault_ts, "kind": os.environ["FAULT"], "for_s": float(os.environ["FAULT_FOR"]) if os.environ["FAULT"] in ("hang", "silent") else None,
            "end_ts": float(open(f"{T}/fault_end_ts").read()) if os.path.exists(f"{T}/fault_end_ts") else None,
            "node": "us-east-1",
            "kill_call_s": round(float(open(f"{T}/fault_ts_after").read()) - fault_ts, 6),
            "loadavg": open(f"{T}/loadavg_at_fault").read().split()[:3]},
  "steady_s": float(open(f"{T}/steady_s").read()),
  "kill_to_promoted_s": None if promoted is None else round(promoted - fault_ts, 3), "promoted_detected_at": promoted,
  "probe_resolution_s": probe.get("resolution_s"),
  "verify": verify, "probe": probe,
  "system_specific": {
     "incident": inc.get("id"), "incident_status": inc.get("status"),
     "lifeboat_fault_to_detect_s": ms("detect_ms"), "lifeboat_fault_to_promoted_s": ms("promote_ms"),
     "lifeboat_fault_to_first_write_s": ms("first_write_ms"), "lag_bytes_at_fault": fig.get("lag_bytes_at_fault")},
}
calls = []
if os.path.exists(f"{T}/rx/calls.jsonl"):
    calls = [json.loads(l) for l in open(f"{T}/rx/calls.jsonl") if l.strip()]
opened = [c for c in calls if c["path"] == "/hook" and c["body"].get("type") == "incident-opened"]
if calls:
    res["notify"] = {"first_notice_at": opened[0]["at"] if opened else None,
                     "fault_to_first_notice_s": round(opened[0]["at"] - fault_ts, 3) if opened else None,
                     "notices": len(calls), "signatures_ok": all(c["signature_ok"] for c in calls if c["path"] == "/hook"),
                     "types": [c["body"].get("type") for c in calls if c["path"] == "/hook"]}
    print(f"NOTIFY {res['run_id']}: fault->first notice={res['notify']['fault_to_first_notice_s']}s "
          f"({len(calls)} notices, signatures ok: {res['notify']['signatures_ok']})")
drill = load(f"{T}/drill.json")
if drill:
    m = drill.get("measured") or {}
    wall = open(f"{T}/drill_wall").read().split()
    res["drill"] = {"run": drill.get("id"), "status": drill.get("status"), "rto_s": None if m.get("rto_ms") is None else m["rto_ms"] / 1000,
                    "acked": m.get("acked"), "lost": len(m.get("lost") or []), "primary_after": drill.get("primary_after"),
                    "primary_at_end": drill.get("primary_at_end"),
                    "duration_s": round((drill["ended_ms"] - drill["started_ms"]) / 1000, 3),
                    "cli_wall_s": round(float(wall[1]) - float(wall[0]), 3),
                    "verdict": drill.get("verdict")}
    print(f"DRILL {res['run_id']}: status={drill.get('status')} drill RTO={res['drill']['rto_s']}s "
          f"canary.py RTO={verify.get('fault_to_first_ack_s')}s lost={res['drill']['lost']} duration={res['drill']['duration_s']}s")
with open(out, "w") as f: json.dump(res, f, indent=2)
v = verify
print(f"RESULT {res['run_id']}: kill->promoted={res['kill_to_promoted_s']}s RTO(max gap)={v.get('rto_max_gap_s')}s "
      f"kill->first ack={v.get('fault_to_first_ack_s')}s lost_acked={v.get('lost_acked')}")
PYEOF
  cp "$T/lifeboat.log" "$T/probe.json" "$T/verify.json" "$T/incidents.json" "$T/fault_ts" "$T/drill.json" "$T/drill.md" "$T/drill.svg" "$RESULTS_DIR/$run_id/" 2>/dev/null
  gzip -c "$T/canary.jsonl" > "$RESULTS_DIR/$run_id/canary.jsonl.gz" 2>/dev/null
  return $rc
}

# The storm: a switchover opens an incident, then STORM operator updates of it as fast as the
# API takes them. One webhook receiver is up, one is down until the first has everything.
storm_run() {
  "$LIFEBOAT" switchover --to eu-west-1 --api "http://127.0.0.1:$API" > "$T/switchover.out" 2>&1 \
    || { log "switchover failed: $(tail -3 "$T/switchover.out")"; return 6; }
  log "storm of $STORM updates; webhook max-per-minute=${STORM_RATE:-default}"
  API="$API" RXP="$RXP" RX2P="$RX2P" STORM="$STORM" RECEIVER_PY="$RECEIVER_PY" \
    "$PY" "$ROOT/bench/notify/storm.py" "$T" "$RESULTS_DIR/$RUN_ID.json"
  local rc=$?
  [[ -f "$T/rx2.pid" ]] && RX2_PID="$(cat "$T/rx2.pid")"
  mkdir -p "$RESULTS_DIR/$RUN_ID"; cp "$T/lifeboat.log" "$RESULTS_DIR/$RUN_ID/" 2>/dev/null
  return $rc
}

# The stall fault: freeze and thaw the primary STALLS times; nothing may fail over.
stall_run() {
  local sec; sec="$(awk -v m="$STALL_MS" 'BEGIN{printf "%.3f", m/1000}')"
  local i pids
  for i in $(seq 1 "$STALLS"); do
    pids="$(pids_in_datadir "$T/us-east-1" | tr '\n' ' ')"
    kill -STOP $pids 2>/dev/null; sleep "$sec"; kill -CONT $pids 2>/dev/null
    sleep 1
  done
  sleep 2
  kill -TERM "$CANARY_PID" 2>/dev/null; wait "$CANARY_PID" 2>/dev/null; CANARY_PID=""
  curl -fsS -m 2 "http://127.0.0.1:$API/v1/status?service=bench" > "$T/status.json"
  curl -fsS -m 2 "http://127.0.0.1:$API/v1/incidents" > "$T/incidents.json"
  "$PY" "$SHARED/canary.py" verify --dsn "$(pg_dsn "$EP")" --log "$T/canary.jsonl" \
    --out "$T/verify.json" --quiet --connect-wait 20 > "$T/verify.out" 2>&1
  "$PY" - "$T" "$RESULTS_DIR/$RUN_ID.json" "$STALLS" "$STALL_MS" <<'PYEOF'
import json, sys, os
T, out, stalls, stall_ms = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
st = json.load(open(f"{T}/status.json")); inc = json.load(open(f"{T}/incidents.json"))
verify = json.load(open(f"{T}/verify.json")) if os.path.exists(f"{T}/verify.json") else {}
res = {"system": "lifeboat", "system_version": os.environ.get("LIFEBOAT_VERSION"), "fault": "sigstop",
       "stalls": stalls, "stall_ms": stall_ms, "failovers": len([i for i in inc if i["kind"] != "adopt"]),
       "epoch_after": st["epoch"], "primary_after": st["primary"], "verify": verify}
json.dump(res, open(out, "w"), indent=2)
print(f"RESULT {os.environ['RUN_ID']}: {stalls} stalls of {stall_ms} ms -> failovers={res['failovers']} "
      f"epoch={st['epoch']} primary={st['primary']} max gap={verify.get('rto_max_gap_s')}s lost_acked={verify.get('lost_acked')}")
PYEOF
}

export LIFEBOAT_VERSION PG_VERSION SYNC FAULT FAULT_FOR STORM_RATE
overall=0
for i in $(seq 1 "$RUNS"); do
  export RUN_IDX="$i" RUN_START="$EPOCHREALTIME"
  RUN_ID="lifeboat-$( ((STALLS)) && echo stall || { ((STORM)) && echo "storm$STORM"; } || echo "$FAULT")-$( ((SYNC)) && echo sync || echo async )-$(date -u +%Y%m%dT%H%M%SZ)-r${i}"
  export RUN_ID
  ( run_once ) & child=$!
  trap 'kill -TERM $child 2>/dev/null; wait $child; exit 130' INT TERM
  wait "$child"; rc=$?
  trap - INT TERM
  ((rc)) && { log "run $i failed rc=$rc"; overall=$rc; }
done
exit $overall
