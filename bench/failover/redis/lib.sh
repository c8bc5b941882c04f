# shellcheck shell=bash
# lib.sh - shared by run-sentinel.sh and run-lifeboat-redis.sh: the three Redis servers,
# helpers, the per-run teardown and the run loop with its watchdog. Sourced, not run.
#
# The caller sets before sourcing: HERE, PY (python3), and after parsing its options calls
# redis_preflight. Every process is started by this file's functions, recorded by PID, and
# stopped by PID in run_teardown; nothing is ever killed by name.

REDIS_SERVER="${REDIS_SERVER:-/usr/bin/redis-server}"
REDIS_SENTINEL="${REDIS_SENTINEL:-/usr/bin/redis-sentinel}"
REDIS_CLI="${REDIS_CLI:-/usr/bin/redis-cli}"
# shellcheck disable=SC2034  # used by the scripts that source this file
CANARY="$HERE/canary_redis.py"

# shellcheck source=../common.sh
. "$HERE/../common.sh"
# shared_option ARGS...: takes the option at the front of ARGS that both adapters have, and
# sets SHIFT to how many words it used; exits on an unknown one, and on --help.
# shellcheck disable=SC2034  # the options belong to the scripts that source this file
shared_option() {
  SHIFT=2
  case "$1" in
    --runs) RUNS="$2";;
    --fault) FAULT="$2";;
    --fault-for) FAULT_FOR="$2";;
    --steady) STEADY="$2";;
    --steady-jitter) STEADY_JITTER="$2";;
    --post) POST="$2";;
    --promote-timeout) PROMOTE_TIMEOUT="$2";;
    --results) RESULTS_DIR="$2";;
    --keep-tmp) KEEP_TMP=1; SHIFT=1;;
    --interval) CANARY_INTERVAL="$2";;
    --hard-limit) RUN_HARD_LIMIT="$2";;
    -h|--help) awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$0"; exit 0;;
    *) echo "unknown argument: $1" >&2; exit 2;;
  esac
}

# redis_fault_check: fails on a fault this benchmark cannot apply; skips (exit 0) a silent
# network this machine cannot make.
redis_fault_check() {
  if ! fault_check "$FAULT"; then
    [[ "$FAULT" == silent ]] && { echo "skipping --fault silent: this machine cannot apply it (reason above)" >&2; exit 0; }
    exit 2
  fi
}

# nap S: a sleep that a TERM/INT trap can interrupt (bash runs traps only between commands,
# but at once while it waits in the `wait` builtin)
nap() { sleep "$1" & wait $!; }

# free_ports N: N distinct free loopback TCP ports (bound together, so they differ)
free_ports() {
  "$PY" - "$1" <<'EOF'
import socket, sys
ss = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ss.append(s)
print(" ".join(str(s.getsockname()[1]) for s in ss))
EOF
}

redis_preflight() {
  local b
  for b in "$REDIS_SERVER" "$REDIS_CLI" "$@"; do
    [[ -x "$b" ]] || { echo "$b not found" >&2; return 2; }
  done
  "$PY" -c 'import redis' 2>/dev/null || { echo "redis-py missing: pip install --break-system-packages redis" >&2; return 2; }
  [[ $EUID -eq 0 ]] || { echo "run as root (the hang/silent faults and nftables need it)" >&2; return 2; }
  REDIS_VERSION="$("$REDIS_SERVER" --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
  export REDIS_VERSION
}

# rcli PORT ARGS...: redis-cli against a server of this run; the password travels in
# REDISCLI_AUTH (environment), never on the command line
rcli() {
  local port="$1"; shift
  REDISCLI_AUTH="$(cat "$T/redis.pass")" timeout 5 "$REDIS_CLI" --no-auth-warning -h 127.0.0.1 -p "$port" "$@" 2>/dev/null
}
# scli PORT ARGS...: redis-cli against a Sentinel (no password)
scli() { local port="$1"; shift; timeout 5 "$REDIS_CLI" -h 127.0.0.1 -p "$port" "$@" 2>/dev/null; }

# pids_of PID: PID and its children (redis-server forks for RDB/diskless transfers)
pids_of() {
  [[ -n "${1:-}" ]] || return 0
  echo "$1"
  cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+$'
}

# ---- the Redis data nodes --------------------------------------------------------------------
# redis_node NAME PORT [MASTER_PORT]: write NAME/redis.conf (0600: it holds requirepass and
# masterauth) and start redis-server on 127.0.0.1:PORT; NODE_PID[NAME] is its PID
declare -A NODE_PID=()
redis_node() {
  local name="$1" port="$2" master="${3:-}" d="$T/$1" pass
  pass="$(cat "$T/redis.pass")"
  mkdir -p "$d"
  ( umask 077; cat > "$d/redis.conf" <<EOF
bind 127.0.0.1
port $port
protected-mode yes
daemonize no
dir $d
logfile $d/redis.log
requirepass $pass
masterauth $pass
repl-diskless-sync-delay 0
EOF
  [[ -n "$master" ]] && echo "replicaof 127.0.0.1 $master" >> "$d/redis.conf" )
  "$REDIS_SERVER" "$d/redis.conf" --save '' --appendonly no < /dev/null > "$d/stdout" 2>&1 &
  NODE_PID[$name]=$!
}

replica_up() { rcli "$1" INFO replication | tr -d '\r' | grep -q '^master_link_status:up'; }
master_has_replicas() { [[ "$(rcli "$1" INFO replication | tr -d '\r' | sed -n 's/^connected_slaves://p')" == "$2" ]]; }
role_of() { rcli "$1" ROLE | head -1; }

# start_redis_trio: primary n1 on P1, replicas n2/n3 on P2/P3, replication up
start_redis_trio() {
  head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$T/redis.pass"
  chmod 600 "$T/redis.pass"
  redis_node n1 "$P1"
  wait_until 15 bash -c "REDISCLI_AUTH=\"\$(cat '$T/redis.pass')\" timeout 2 '$REDIS_CLI' --no-auth-warning -h 127.0.0.1 -p $P1 PING 2>/dev/null | grep -q PONG" \
    || { log "n1 did not start"; tail -5 "$T/n1/redis.log" >&2; return 4; }
  redis_node n2 "$P2" "$P1"
  redis_node n3 "$P3" "$P1"
  wait_until 30 replica_up "$P2" && wait_until 30 replica_up "$P3" && wait_until 10 master_has_replicas "$P1" 2 \
    || { log "replication not up"; tail -5 "$T/n2/redis.log" "$T/n3/redis.log" >&2; return 4; }
}

# the current master among the three, by ROLE (the one the fault did not hit, if two claim it)
final_master_port() {
  local p masters=()
  for p in "$P1" "$P2" "$P3"; do
    [[ "$(role_of "$p")" == master ]] && masters+=("$p")
  done
  if ((${#masters[@]} == 1)); then echo "${masters[0]}"; return 0; fi
  for p in "${masters[@]}"; do [[ "$p" != "$P1" ]] && { echo "$p"; return 0; }; done
  return 1
}

steady_period() { awk -v s="$STEADY" -v j="$STEADY_JITTER" -v r="$RANDOM" 'BEGIN{printf "%.3f", s + j*r/32768}'; }

# stop_pids PID...: TERM, up to 10 s, then KILL; only the PIDs given
stop_pids() {
  local p any
  for p in "$@"; do alive "$p" && kill -TERM "$p" 2>/dev/null; done
  for _ in $(seq 1 100); do
    any=0; for p in "$@"; do alive "$p" && any=1; done
    ((any)) || break; sleep 0.1
  done
  for p in "$@"; do alive "$p" && kill -KILL "$p" 2>/dev/null; done
  return 0
}

# ---- the fault ------------------------------------------------------------------------------
# apply_fault: SIGKILL / SIGSTOP / silence of the primary's redis-server (n1), with faults.sh
apply_fault() {
  local victims; victims="$(pids_of "${NODE_PID[n1]}" | tr '\n' ' ')"
  [[ -n "${victims// }" ]] || { log "no primary process"; return 6; }
  cat /proc/loadavg > "$T/loadavg_at_fault"
  fault_begin "$FAULT" "$victims" "$P1"
  echo "$FAULT_TS" > "$T/fault_ts"; echo "$FAULT_TS_AFTER" > "$T/fault_ts_after"
  log "FAULT at $FAULT_TS: $FAULT n1 (127.0.0.1:$P1, pids $victims)"
}

# end_fault_on_time: for hang and silent, keep the fault for its whole length, then undo it
end_fault_on_time() {
  [[ "$FAULT" == hang || "$FAULT" == silent ]] || return 0
  nap "$(awk -v f="$FAULT_TS" -v d="$FAULT_FOR" -v n="$EPOCHREALTIME" 'BEGIN{r=f+d-n; printf "%.3f", (r>0?r:0)}')"
  echo "$EPOCHREALTIME" > "$T/fault_end_ts"
  fault_end
  log "fault ended after ${FAULT_FOR}s"
}

# write_meta FILE JSON-FRAGMENT-FILE: the common part of the result JSON (the rest comes from
# canary_redis.py verify --meta --probe)
write_meta() {
  "$PY" - "$T" "$1" "${2:-}" <<'PYEOF'
import json, os, sys
T, out, extra = sys.argv[1], sys.argv[2], sys.argv[3]
def rd(p, conv=float):
    try:
        with open(f"{T}/{p}") as f: return conv(f.read().strip())
    except (OSError, ValueError): return None
e = os.environ
fault = e["FAULT"]
m = {
  "system": e["SYSTEM"], "system_version": e.get("SYSTEM_VERSION"), "dcs": e.get("DCS"),
  "redis": e.get("REDIS_VERSION"), "settings": e["SETTINGS"], "profile": f"{e['SETTINGS']}/{fault}",
  "sync": e.get("SYNC") == "1", "run": int(e["RUN_IDX"]), "run_id": e["RUN_ID"],
  "started_at": float(e["RUN_START"]),
  "params": json.loads(e.get("PARAMS_JSON") or "{}"),
  "canary": {"write": "SET canary:<seq> <seq>; WAIT 1 <ms>", "interval_s": float(e["CANARY_INTERVAL"]),
             "wait_timeout_ms": int(e["WAIT_TIMEOUT_MS"]), "via": e.get("CANARY_VIA")},
  "fault": {"ts": rd("fault_ts"), "kind": fault,
            "for_s": float(e["FAULT_FOR"]) if fault in ("hang", "silent") else None,
            "end_ts": rd("fault_end_ts"), "node": "n1 (primary)",
            "kill_call_s": None, "loadavg": (rd("loadavg_at_fault", str) or "").split()[:3]},
  "steady_s": rd("steady_s"),
  "system_specific": {},
}
a = rd("fault_ts_after")
if a is not None and m["fault"]["ts"] is not None:
    m["fault"]["kill_call_s"] = round(a - m["fault"]["ts"], 6)
if extra and os.path.exists(extra):
    with open(extra) as f: m["system_specific"].update(json.load(f))
with open(out, "w") as f: json.dump(m, f, indent=2)
PYEOF
}

# ---- the run loop ---------------------------------------------------------------------------
# run_loop PREFIX: RUNS runs of run_once, each in its own subshell (its EXIT/INT/TERM trap
# tears the run down) under a watchdog that sends TERM after RUN_HARD_LIMIT seconds.
run_loop() {
  local prefix="$1" overall=0 i rc child wd
  for i in $(seq 1 "$RUNS"); do
    export RUN_IDX="$i" RUN_START="$EPOCHREALTIME"
    RUN_ID="$prefix-$(date -u +%Y%m%dT%H%M%SZ)-r${i}"; export RUN_ID
    ( run_once ) & child=$!
    ( trap 'kill -TERM $sp 2>/dev/null; exit 0' TERM
      sleep "$RUN_HARD_LIMIT" & sp=$!; wait $sp
      echo "[watchdog] run $RUN_ID exceeded ${RUN_HARD_LIMIT}s: TERM" >&2; kill -TERM "$child" 2>/dev/null ) & wd=$!
    trap 'kill -TERM $child 2>/dev/null; wait $child; kill -TERM $wd 2>/dev/null; exit 130' INT TERM
    wait "$child"; rc=$?
    kill -TERM "$wd" 2>/dev/null; wait "$wd" 2>/dev/null
    trap - INT TERM
    ((rc)) && { log "run $i failed rc=$rc"; overall=$rc; }
  done
  return $overall
}
