#!/usr/bin/env python3
"""Medians and ratios of failover benchmark results, per fault, side by side.

Reads the per-run JSON that run-lifeboat.sh and run-patroni.sh write (the shared canary.py
format; the fault is the part of "profile" after the slash) and prints a Markdown table:
for each fault and system, n, the median fault -> first acknowledged write after the outage
with its range (the end of the longest gap between two acknowledged writes, minus the fault's
time: canary.py's own fault_to_first_ack_s counts from the first *failed* write, and a write
that merely hangs through a silent network or a hang never fails, so it would miss the
outage),
the median fault -> promoted, how many runs promoted the standby while a hang or silence was
still in place, the longest write pause, and the acknowledged writes lost; then the ratio of
the medians, Patroni / Lifeboat, per fault.

    python3 bench/failover/summarize.py bench/failover/results/quiet-*/ [more dirs or files]
"""
import json
import statistics
import sys
from pathlib import Path


def load(args, stalls=None):
    for a in args:
        p = Path(a)
        files = sorted(p.glob("*.json")) if p.is_dir() else [p]
        for f in files:
            try:
                r = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if "verify" in r and "system" in r and "profile" in r:
                yield r
            elif "stalls" in r and stalls is not None:
                stalls.append(r)


def outage_end(r):
    """Fault -> the acknowledged write that ended the longest write gap (None before it)."""
    g, t = r["verify"].get("max_gap") or {}, r["fault"].get("ts")
    if g.get("t_to") is None or t is None or g["t_to"] < t:
        return None
    return g["t_to"] - t


def med(xs):
    xs = [x for x in xs if x is not None]
    return (statistics.median(xs), min(xs), max(xs)) if xs else None


def fmt(m, rng=True):
    if m is None:
        return "–"
    return f"{m[0]:.2f} [{m[1]:.2f}..{m[2]:.2f}]" if rng else f"{m[0]:.2f}"


def main(args):
    stalls = []
    rows = list(load(args, stalls))
    groups = {}
    for r in rows:
        prof, _, fault = r["profile"].partition("/")
        key = (fault or "kill", "on" if r.get("sync") else "off", r["system"], prof)
        groups.setdefault(key, []).append(r)
    order = {"kill": 0, "hang": 1, "silent": 2, "switchover": 3}
    print("| fault | sync | system | settings | n | fault→first ack s, median [min..max] "
          "| fault→promoted s, median | promoted during the fault | longest write pause s, median "
          "| lost acked (total) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    medians = {}
    for key in sorted(groups, key=lambda k: (order.get(k[0], 9), k[1], k[2])):
        fault, sync, system, prof = key
        rs = groups[key]
        first_ack = med([outage_end(r) for r in rs])
        promoted = med([r.get("kill_to_promoted_s") for r in rs])
        gap = med([r["verify"].get("rto_max_gap_s") for r in rs])
        lost = sum(r["verify"].get("lost_acked") or 0 for r in rs)
        during = "–"
        if fault in ("hang", "silent"):
            n_during = 0
            for r in rs:
                end, p = r["fault"].get("end_ts"), r.get("promoted_detected_at")
                if end is not None and p is not None and p < end:
                    n_during += 1
            during = f"{n_during}/{len(rs)}"
        medians[(fault, sync, system)] = gap[0] if fault == "switchover" and gap else (
            first_ack[0] if first_ack else None)
        print(f"| {fault} | {sync} | {system} | {prof} | {len(rs)} | {fmt(first_ack)} | "
              f"{fmt(promoted, False)} | {during} | {fmt(gap, False)} | {lost} |")
    print()
    print("| fault | sync | Patroni / Lifeboat (median fault→first ack; write pause for switchover) |")
    print("|---|---|---|")
    for (fault, sync, system), m in sorted(medians.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1])):
        if system != "lifeboat" or not m:
            continue
        p = medians.get((fault, sync, "patroni"))
        if p:
            print(f"| {fault} | {sync} | {p / m:.1f}× |")
    for r in stalls:
        print(f"\nStalls ({r['system']}): {r['stalls']} × {r['stall_ms']} ms SIGSTOP of the primary -> "
              f"{r['failovers']} failover(s), epoch {r['epoch_after']}, longest write gap "
              f"{r['verify'].get('rto_max_gap_s')} s, lost acked {r['verify'].get('lost_acked')}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["bench/failover/results"])
