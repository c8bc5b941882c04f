#!/usr/bin/env python3
"""Summarize region-outage drill runs (run-region-outage.sh): one table per run, then the
medians and spreads, and the largest difference between the drill's own RTO and canary.py's."""
import json
import statistics
import sys
from pathlib import Path


def main(d: str) -> int:
    runs = []
    for f in sorted(Path(d).glob("*.json")):
        r = json.loads(f.read_text())
        if "drill" in r:
            runs.append(r)
    if not runs:
        print(f"no drill runs in {d}")
        return 1
    print("| run | drill | drill RTO s | canary.py RTO s | diff ms | lost (drill) | lost (canary.py) | drill duration s |")
    print("|---|---|---|---|---|---|---|---|")
    diffs, rtos, durs = [], [], []
    for r in runs:
        dr, v = r["drill"], r["verify"]
        c = v.get("fault_to_first_ack_s")
        diff = None if dr["rto_s"] is None or c is None else round((dr["rto_s"] - c) * 1000, 1)
        if diff is not None:
            diffs.append(diff)
        if dr["rto_s"] is not None:
            rtos.append(dr["rto_s"])
        durs.append(dr["duration_s"])
        print(f"| {r['run']} | {dr['status']} | {dr['rto_s']} | {c} | {diff} | {dr['lost']} | {v.get('lost_acked')} | {dr['duration_s']} |")
    passed = sum(1 for r in runs if r["drill"]["status"] == "passed")
    lost = sum(r["drill"]["lost"] for r in runs)
    lost_c = sum(r["verify"].get("lost_acked") or 0 for r in runs)
    print()
    print(f"runs: {len(runs)}, passed: {passed}")
    if rtos:
        print(f"drill RTO: median {statistics.median(rtos):.3f} s, min {min(rtos):.3f}, max {max(rtos):.3f}, "
              f"stdev {statistics.pstdev(rtos):.3f}")
    print(f"lost acknowledged writes: {lost} (drill canary), {lost_c} (canary.py)")
    print(f"whole drill with rollback and failback: median {statistics.median(durs):.3f} s, "
          f"min {min(durs):.3f}, max {max(durs):.3f}")
    if diffs:
        print(f"drill RTO - canary.py RTO: median {statistics.median(diffs):.1f} ms, "
              f"largest |diff| {max(abs(x) for x in diffs):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "results"))
