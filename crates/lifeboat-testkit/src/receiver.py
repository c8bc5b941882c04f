"""A recording HTTP receiver for notification tests (Slack, PagerDuty, webhooks).

Every POST is appended to calls.jsonl in its directory: path, lower-cased headers, body
(parsed JSON when it is JSON), the status it answered, and for requests that carry
Standard Webhooks headers whether their signature verifies against $RECEIVER_SECRET
(HMAC-SHA256 over "{id}.{timestamp}.{body}", a whsec_ secret being base64 after its prefix,
the timestamp within five minutes). control.json, read on every request, makes a path fail:
{"/path": {"status": 503, "fail_first": 2, "delay_ms": 0}} answers 503 to its first two
requests (all of them without fail_first), after delay_ms.
"""
import base64, hashlib, hmac, json, os, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DIR = sys.argv[2]
LOCK = threading.Lock()
SEEN = {}


def key():
    s = os.environ.get("RECEIVER_SECRET", "")
    if s.startswith("whsec_"):
        return base64.b64decode(s[len("whsec_"):])
    return s.encode()


def verify(headers, body):
    mid, ts, sig = (headers.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (mid and ts and sig):
        return None
    if abs(time.time() - int(ts)) > 300:
        return False
    want = base64.b64encode(hmac.new(key(), f"{mid}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(want, s.split(",", 1)[1]) for s in sig.split() if s.startswith("v1,"))


class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            control = json.load(open(os.path.join(DIR, "control.json")))
        except (OSError, ValueError):
            control = {}
        rule = control.get(self.path, {})
        with LOCK:
            n = SEEN.get(self.path, 0)
            SEEN[self.path] = n + 1
        failing = rule.get("status") and ("fail_first" not in rule or n < rule["fail_first"])
        if rule.get("delay_ms"):
            time.sleep(rule["delay_ms"] / 1000)
        code = rule["status"] if failing else (202 if "pagerduty" in self.path else 200)
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = body.decode("utf-8", "replace")
        rec = {"path": self.path, "headers": headers, "body": parsed, "answered": code,
               "at": time.time(), "signature_ok": verify(headers, body)}
        with LOCK:
            with open(os.path.join(DIR, "calls.jsonl"), "a") as f:
                f.write(json.dumps(rec) + "\n")
        out = b"ok" if code < 300 else b"invalid_payload" if code < 500 else b"unavailable"
        try:
            self.send_response(code)
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
        except OSError:
            pass


srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
srv.daemon_threads = True
print("listening", flush=True)
srv.serve_forever()
