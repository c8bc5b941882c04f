"""Summarizes a bench/notify sitting: fault -> first notification beside canary.py's RTO (per
fault: median, min, max, and the median of first-notice/RTO), and the storm runs."""
import glob
import json
import os
import statistics
import sys

root = sys.argv[1]


def load(pattern):
    out = []
    for p in sorted(glob.glob(pattern)):
        try:
            out.append(json.load(open(p)))
        except (OSError, ValueError):
            pass
    return out


print("## Fault to first notification (webhook received), beside canary.py's RTO\n")
print("| fault | runs | first notice median | min | max | canary.py RTO median | notice − RTO median | lost acked |")
print("|---|---|---|---|---|---|---|---|")
for fault in ("kill", "hang", "silent"):
    runs = [r for r in load(f"{root}/first-notice/*.json") if r.get("fault", {}).get("kind") == fault]
    notes = [r["notify"]["fault_to_first_notice_s"] for r in runs
             if r.get("notify", {}).get("fault_to_first_notice_s") is not None]
    rtos = [r["verify"].get("fault_to_first_ack_s") for r in runs if r.get("verify", {}).get("fault_to_first_ack_s") is not None]
    diff = [r["notify"]["fault_to_first_notice_s"] - r["verify"]["fault_to_first_ack_s"] for r in runs
            if r.get("notify", {}).get("fault_to_first_notice_s") is not None
            and r.get("verify", {}).get("fault_to_first_ack_s") is not None]
    lost = sum(r.get("verify", {}).get("lost_acked") or 0 for r in runs)
    if not notes:
        print(f"| {fault} | {len(runs)} | no notice | | | | | |")
        continue
    print(f"| {fault} | {len(runs)} | {statistics.median(notes):.3f} s | {min(notes):.3f} s | {max(notes):.3f} s | "
          f"{statistics.median(rtos):.3f} s | {statistics.median(diff):+.3f} s | {lost} |")

print("\n## The outbox in a storm (one receiver down until the other has everything)\n")
print("| webhook rate limit | runs | enqueue /s | up receiver: first update → last delivery | up /s | "
      "down receiver back → all delivered | down /s after back | Slack messages | each once, in order |")
print("|---|---|---|---|---|---|---|---|---|")
storms = load(f"{root}/storm/*.json")
for rate in sorted({s["webhook_max_per_minute"] for s in storms}):
    s = [x for x in storms if x["webhook_max_per_minute"] == rate]
    med = lambda f: statistics.median(f(x) for x in s)
    ok = all(x["up"]["unique"] == x["up"]["count"] == x["storm"] and x["down"]["unique"] == x["down"]["count"] == x["storm"]
             and x["up"]["in_order"] and x["down"]["in_order"] and x["chat"]["all_once_in_digests"] for x in s)
    print(f"| {rate} | {len(s)} | {med(lambda x: x['enqueue_per_s']):.0f} | "
          f"{med(lambda x: x['up']['first_update_to_last_delivery_s']):.2f} s | {med(lambda x: x['up']['per_s']):.0f} | "
          f"{med(lambda x: x['down']['back_to_last_delivery_s']):.2f} s | {med(lambda x: x['down']['per_s_after_back']):.0f} | "
          f"{med(lambda x: x['chat']['messages']):.0f} | {'yes' if ok else 'NO'} |")
