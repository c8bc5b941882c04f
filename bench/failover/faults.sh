# faults.sh - the faults of the failover benchmark, shared by run-lifeboat.sh and
# run-patroni.sh so that both systems get exactly the same fault. Sourced, not run.
#
#   kill    SIGKILL every process of the primary node, in one kill(1) call (node loss).
#   hang    SIGSTOP every process of the primary node; SIGCONT after --fault-for seconds
#           (a hung host: connections are accepted by the kernel, nothing answers).
#   silent  the primary node's network goes silent for --fault-for seconds: its processes
#           are put in a cgroup (v2) whose sockets' packets are dropped, and so is every
#           packet to its ports (nftables, loopback). Nothing is refused or reset; the node
#           itself keeps running and comes back with its data when the silence ends.
#
# fault_begin KIND "PIDS" "PORTS"  applies it; sets FAULT_TS ($EPOCHREALTIME just before)
#                                  and FAULT_TS_AFTER.
# fault_end                        undoes hang and silent (no-op for kill); idempotent, and
#                                  called by the adapters' teardown, so an interrupted run
#                                  never leaves a node frozen or a drop rule behind.
# Needs root; silent needs `nft` (Debian nftables) and a cgroup v2 mount.

FAULT_KIND="" FAULT_PIDS="" FAULT_TABLE="" FAULT_CGROUP="" FAULT_TS="" FAULT_TS_AFTER=""

fault_cgroup2_root() {
  local m; m="$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)"
  [[ -n "$m" ]] || return 1
  echo "$m"
}

fault_check() {  # KIND: fails with a reason when this machine cannot apply it
  case "$1" in
    kill|hang|switchover) return 0;;
    silent)
      command -v nft >/dev/null || { echo "nft missing: apt-get install nftables" >&2; return 1; }
      fault_cgroup2_root >/dev/null || { echo "no cgroup v2 mount" >&2; return 1; }
      return 0;;
    *) echo "unknown fault $1 (kill, hang, silent, switchover)" >&2; return 1;;
  esac
}

fault_begin() {  # KIND PIDS PORTS
  FAULT_KIND="$1" FAULT_PIDS="$2"
  local ports="$3"
  case "$FAULT_KIND" in
    kill)
      FAULT_TS="$EPOCHREALTIME"; kill -KILL $FAULT_PIDS 2>/dev/null; FAULT_TS_AFTER="$EPOCHREALTIME";;
    hang)
      FAULT_TS="$EPOCHREALTIME"; kill -STOP $FAULT_PIDS 2>/dev/null; FAULT_TS_AFTER="$EPOCHREALTIME";;
    silent)
      local root; root="$(fault_cgroup2_root)"
      FAULT_CGROUP="$root/lifeboat-bench-$$"
      FAULT_TABLE="lifeboat_bench_$$"
      mkdir -p "$FAULT_CGROUP"
      local p; for p in $FAULT_PIDS; do echo "$p" > "$FAULT_CGROUP/cgroup.procs" 2>/dev/null; done
      # nft resolves a cgroup path below /sys/fs/cgroup; the level is its depth in the v2 tree.
      local rel="${FAULT_CGROUP#/sys/fs/cgroup/}" dports
      dports="$(echo $ports | tr ' ' ',')"
      local rules="table inet $FAULT_TABLE {
  chain out {
    type filter hook output priority 0; policy accept;
    socket cgroupv2 level 1 \"$rel\" drop
    tcp dport { $dports } drop
  }
}"
      FAULT_TS="$EPOCHREALTIME"; echo "$rules" | nft -f - ; FAULT_TS_AFTER="$EPOCHREALTIME";;
  esac
}

fault_end() {
  case "$FAULT_KIND" in
    hang) kill -CONT $FAULT_PIDS 2>/dev/null;;
    silent)
      [[ -n "$FAULT_TABLE" ]] && nft delete table inet "$FAULT_TABLE" 2>/dev/null
      if [[ -n "$FAULT_CGROUP" && -d "$FAULT_CGROUP" ]]; then
        local root p; root="$(fault_cgroup2_root)"
        for p in $(cat "$FAULT_CGROUP/cgroup.procs" 2>/dev/null); do echo "$p" > "$root/cgroup.procs" 2>/dev/null; done
        rmdir "$FAULT_CGROUP" 2>/dev/null
      fi;;
  esac
  FAULT_KIND="" FAULT_TABLE="" FAULT_CGROUP=""
}
