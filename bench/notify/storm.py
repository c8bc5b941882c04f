"""The outbox in a storm (run by ../failover/run-lifeboat.sh --storm N, which starts the
servers, Lifeboat and the first receiver, and opens an incident by a switchover).

N operator updates of the incident go to the API as fast as it takes them; each is one notice
for three notifiers: webhook `bench` (receiver up), webhook `down` (nothing listens on its
port until `bench` has everything) and Slack `chat` (rate-limited, digests). Measured: the
enqueue rate, the time from the first update to the last delivery at the receiver that is up,
what waits for the one that is down and how fast it drains when it comes back, and whether
every receiver got each notice exactly once and in order.

Usage: storm.py TMPDIR RESULT.json (environment: API, RXP, RX2P, STORM, RECEIVER_PY,
LIFEBOAT_API_TOKEN, RUN_ID, STORM_RATE, LIFEBOAT_VERSION).
"""
import http.client
import json
import os
import subprocess
import sys
import time

T, out = sys.argv[1], sys.argv[2]
api, n, token = int(os.environ["API"]), int(os.environ["STORM"]), os.environ["LIFEBOAT_API_TOKEN"]


def get(path):
    c = http.client.HTTPConnection("127.0.0.1", api, timeout=10)
    c.request("GET", path)
    return json.loads(c.getresponse().read())


def calls(d):
    p = f"{T}/{d}/calls.jsonl"
    if not os.path.exists(p):
        return []
    return [json.loads(line) for line in open(p) if line.strip()]


def storm_of(d):
    return [c for c in calls(d) if c["path"] == "/hook"
            and str(c["body"]["data"].get("text", "")).startswith("storm-")]


def wait(pred, limit):
    end = time.time() + limit
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def seq(cs):
    ids = [int(c["headers"]["webhook-id"].split("_")[1]) for c in cs]
    return {"count": len(ids), "unique": len(set(ids)),
            "in_order": all(a < b for a, b in zip(ids, ids[1:])),
            "signatures_ok": all(c["signature_ok"] for c in cs)}


def chat_drained():
    return all(x["behind"] == 0 for x in get("/v1/notify")["notifiers"] if x["name"] == "chat")


inc = get("/v1/status?service=bench")["last_incident"]
conn = http.client.HTTPConnection("127.0.0.1", api, timeout=10)
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
t0 = time.time()
for i in range(n):
    body = json.dumps({"state": "monitoring", "message": f"storm-{i:05d}", "by": "bench"})
    conn.request("POST", f"/v1/incidents/{inc}/updates", body, headers)
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"update {i} answered {r.status}")
t_enq = time.time()

ok_up = wait(lambda: len(storm_of("rx")) >= n, 600)
up = storm_of("rx")
t_up_last = max(c["at"] for c in up) if up else None
st = {x["name"]: x for x in get("/v1/notify")["notifiers"]}
while_down = {k: st["down"][k] for k in ("behind", "attempts", "last_error")}

t_back = time.time()
rx2 = subprocess.Popen([sys.executable, os.environ["RECEIVER_PY"], os.environ["RX2P"], f"{T}/rx2"],
                       stdout=subprocess.DEVNULL, stderr=open(f"{T}/rx2/receiver.log", "w"))
open(f"{T}/rx2.pid", "w").write(str(rx2.pid))
ok_down = wait(lambda: len(storm_of("rx2")) >= n, 900)
down = storm_of("rx2")
t_down_last = max(c["at"] for c in down) if down else None

ok_chat = wait(chat_drained, 900)
chat = [json.dumps(c["body"]) for c in calls("rx") if c["path"] == "/slack/bench"]
chat_once = ok_chat and all(sum(f"storm-{i:05d}" in m for m in chat) == 1 for i in range(n))

res = {
    "system": "lifeboat", "system_version": os.environ.get("LIFEBOAT_VERSION"),
    "run_id": os.environ["RUN_ID"], "storm": n,
    "webhook_max_per_minute": os.environ.get("STORM_RATE") or "default (6000)",
    "enqueue_s": round(t_enq - t0, 3), "enqueue_per_s": round(n / (t_enq - t0), 1),
    "up": dict(seq(up), delivered_all=ok_up,
               first_update_to_last_delivery_s=None if t_up_last is None else round(t_up_last - t0, 3),
               per_s=None if t_up_last is None else round(n / (t_up_last - t0), 1)),
    "down": dict(seq(down), while_down=while_down, delivered_all=ok_down,
                 back_to_last_delivery_s=None if t_down_last is None else round(t_down_last - t_back, 3),
                 per_s_after_back=None if t_down_last is None else round(n / max(t_down_last - t_back, 1e-9), 1)),
    "chat": {"messages": len(chat), "all_once_in_digests": chat_once},
}
json.dump(res, open(out, "w"), indent=2)
u, d = res["up"], res["down"]
print(f"STORM {res['run_id']}: {n} updates enqueued in {res['enqueue_s']} s ({res['enqueue_per_s']}/s); "
      f"up receiver {u['per_s']}/s (all {u['delivered_all']}, each once {u['unique'] == u['count'] == n}, "
      f"in order {u['in_order']}); down receiver: {while_down['behind']} waiting "
      f"(attempt {while_down['attempts']}: {while_down['last_error']}), back -> all in "
      f"{d['back_to_last_delivery_s']} s (each once {d['unique'] == d['count'] == n}, in order {d['in_order']}); "
      f"slack: {len(chat)} messages, each update once {chat_once}")
sys.exit(0 if (ok_up and ok_down and chat_once and u["unique"] == u["count"] == n
               and d["unique"] == d["count"] == n and u["in_order"] and d["in_order"]) else 1)
