#!/usr/bin/env python3
"""Medians and ratios of the Redis failover benchmark, side by side.

Reads the per-run result JSON that run-sentinel.sh and run-lifeboat-redis.sh write (through
canary_redis.py verify --meta) and prints a Markdown table, one row per system, settings and
fault: runs, median fault -> first confirmed write (the first write acknowledged by SET and
WAIT 1 after the first failure after the fault) with its range, median fault -> promoted (the
neutral ROLE probe), the median longest write pause, failed attempts, the median lost
confirmed writes and the total; then, per fault, the ratio of the medians of fault -> first
confirmed write, Sentinel (each settings) / Lifeboat. A ratio above 1 means Lifeboat's clients
were writing again sooner.

    python3 bench/failover/redis/summarize_redis.py bench/failover/results/redis-sitting-*/ [files]
"""
import json
import statistics
import sys
from pathlib import Path

ORDER = {"kill": 0, "hang": 1, "silent": 2}


def load(args):
    for a in args:
        p = Path(a)
        files = sorted(p.glob("*.json")) if p.is_dir() else [p]
        for f in files:
            try:
                r = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(r, dict) and "verify" in r and "system" in r and "profile" in r:
                yield r


def med(xs):
    xs = [x for x in xs if x is not None]
    return (statistics.median(xs), min(xs), max(xs), len(xs)) if xs else None


def fmt(m, rng=True, nd=2):
    if m is None:
        return "–"
    return f"{m[0]:.{nd}f} [{m[1]:.{nd}f}..{m[2]:.{nd}f}]" if rng else f"{m[0]:.{nd}f}"


def main(args):
    rows = list(load(args or ["bench/failover/results"]))
    if not rows:
        print("no results found", file=sys.stderr)
        return 1
    groups = {}
    for r in rows:
        settings, _, fault = r["profile"].partition("/")
        groups.setdefault((fault or "kill", r["system"], r.get("settings", settings)), []).append(r)
    print("| fault | system | settings | runs | fault→first confirmed write s, median [min..max] "
          "| fault→promoted s, median | longest write pause s, median | failed attempts, median "
          "| lost confirmed writes, median | lost confirmed, total | per run |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    medians = {}
    for key in sorted(groups, key=lambda k: (ORDER.get(k[0], 9), k[1] != "lifeboat", k[1], k[2])):
        fault, system, settings = key
        rs = sorted(groups[key], key=lambda r: r.get("started_at", 0))
        first = med([r["verify"].get("fault_to_first_ack_s") for r in rs])
        prom = med([r.get("kill_to_promoted_s") for r in rs])
        gap = med([r["verify"].get("rto_max_gap_s") for r in rs])
        failed = med([r["verify"].get("failed_after_fault", r["verify"].get("failed_attempts")) for r in rs])
        lost = [r["verify"].get("lost_acked") for r in rs]
        lost_m = med(lost)
        not_rec = sum(1 for r in rs if not r["verify"].get("recovered"))
        per_run = ", ".join(
            f"{r['verify'].get('fault_to_first_ack_s') if r['verify'].get('fault_to_first_ack_s') is not None else 'n/a'}"
            f"s/{r['verify'].get('lost_acked')}" for r in rs)
        medians[key] = first[0] if first else None
        n = f"{len(rs)}" + (f" ({not_rec} never recovered)" if not_rec else "")
        print(f"| {fault} | {system} | {settings} | {n} | {fmt(first)} | {fmt(prom, False)} | {fmt(gap, False)} "
              f"| {fmt(failed, False, 0)} | {fmt(lost_m, False, 0)} | {sum(x or 0 for x in lost)} | {per_run} |")
    print()
    print("per run = fault→first confirmed write s / lost confirmed writes, in run order.")
    print()
    print("| fault | Sentinel settings | Sentinel / Lifeboat (median fault→first confirmed write) |")
    print("|---|---|---|")
    any_ratio = False
    for (fault, system, settings), m in sorted(medians.items(), key=lambda kv: (ORDER.get(kv[0][0], 9), kv[0][2])):
        if system != "sentinel" or not m:
            continue
        lb = [v for (f, s, _), v in medians.items() if f == fault and s == "lifeboat" and v]
        if lb:
            print(f"| {fault} | {settings} | {m / lb[0]:.1f}× ({m:.2f} s / {lb[0]:.2f} s) |")
            any_ratio = True
        else:
            print(f"| {fault} | {settings} | – (no Lifeboat runs for this fault) |")
    if not any_ratio:
        print("\n(no Lifeboat results to compare with yet)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
