#!/usr/bin/env python3
"""canary_redis.py - a system-neutral write canary for Redis failover benchmarks.

The Redis counterpart of ../../../../shared/bench/failover/canary.py (PostgreSQL): same log
format, same analysis, same result JSON, so Redis runs sit beside the PostgreSQL ones.
It only speaks RESP (redis-py) to an endpoint: a fixed address (a proxy such as Lifeboat's
endpoint) or the Sentinels of a master set (asked for the master on every reconnect, then
the master's ROLE is checked, as the Sentinel client guidelines describe). It knows nothing
about the system that does the failover.

Sub-commands
------------
run (default)   Every --interval (10 ms), on a fixed schedule that never bursts to catch up:
                ``SET canary:<seq> <seq>`` then ``WAIT <n> <timeout_ms>`` (n = 1). A write is
                *confirmed* (acked) only if SET answered OK and WAIT returned >= n. Any error,
                and a WAIT below n, closes the connection: the next attempt reconnects (via the
                Sentinels in Sentinel mode) after a 10 ms backoff doubling to 100 ms. Connect
                and socket timeouts are bounded (1 s). Every attempt is logged to JSONL.
verify          Reads the log, SCANs canary:* on the final primary, and computes
                fault -> first ack, the longest gap between acks, lost confirmed writes,
                failed attempts. With --meta it writes the whole per-run result JSON.
wait-primary    Neutral promotion probe: polls ROLE on candidate nodes (every 20 ms, one
                persistent connection each) and reports the first moment a node seen as a
                replica answers as master; optionally also when a majority of Sentinels
                report a master other than --old-master.

Log format (one JSON object per line; times are wall-clock UNIX epoch seconds)
---------------------------------------------------------------------------
  {"ev":"start", "t":..., ...}                                    header
  {"seq":N, "t_send":T0, "t_ack":T1, "srv":"h:p", "wait_n":1, ["new_conn":true]}   confirmed
  {"seq":N, "t_send":T0, "t_err":T1, "err":"...", "phase":"discover|connect|set|wait",
   ["set_ok":true, "wait_n":0]}                                   failed / not confirmed
  {"ev":"connect", "t":..., "srv":"h:p", "backend":"127.0.0.1:port", "run_id":"..."}
  {"ev":"stop", "t":..., "reason":"..."}                          trailer
"srv" is the address the canary dialled (the endpoint, or the master the Sentinels named);
"backend" is the server that answered INFO on that connection (tcp_port and run_id), which
shows which node a proxy routed to.

The password comes from --password-file or the environment variable named by --password-env
(REDIS_PASSWORD), never from the command line.
"""
import argparse
import inspect
import json
import math
import os
import signal
import sys
import time

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError:  # pragma: no cover
    sys.stderr.write("canary_redis.py needs redis-py: pip install --break-system-packages redis\n")
    sys.exit(2)

VERSION = "1.0"
SUBCOMMANDS = ("run", "verify", "wait-primary")


class Stop(BaseException):
    """Raised from the signal handler to leave a blocking socket call."""


class CanaryError(Exception):
    pass


def _now():
    return time.time()


def _r(x, nd=6):
    return None if x is None else round(x, nd)


def _errstr(e):
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg[:300]}"


def _hostport(s):
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, got {s!r}")
    return host, int(port)


def _hostports(s):
    return [_hostport(x.strip()) for x in s.split(",") if x.strip()]


def load_password(args):
    if getattr(args, "password_file", None):
        with open(args.password_file) as f:
            return f.read().strip() or None
    env = getattr(args, "password_env", None)
    return os.environ.get(env) if env else None


# no CLIENT SETINFO handshake: redis-py >= 7 takes driver_info=None, older ones lib_name=None
_NO_SETINFO = ({"driver_info": None} if "driver_info" in inspect.signature(redis.Redis.__init__).parameters
               else {"lib_name": None, "lib_version": None})


def connect(host, port, password, timeout, socket_timeout=None):
    """One plain connection, connected now, no library-level retries (every failure must be
    seen by the canary), no CLIENT SETINFO round trip. timeout bounds the connect (and the
    commands unless socket_timeout is given)."""
    r = redis.Redis(host=host, port=port, password=password,
                    socket_timeout=socket_timeout if socket_timeout is not None else timeout,
                    socket_connect_timeout=timeout, socket_keepalive=True,
                    retry=Retry(NoBackoff(), 0), single_connection_client=True,
                    decode_responses=True, health_check_interval=0, **_NO_SETINFO)
    return r


def close(r):
    if r is None:
        return
    try:
        r.close()
    except Exception:
        pass


def _backend(r):
    try:
        info = r.info("server")
        return f"127.0.0.1:{info.get('tcp_port')}" if info.get("tcp_port") else None, str(info.get("run_id", ""))[:12]
    except Exception:
        return None, None


# --------------------------------------------------------------------------- sentinel discovery
class SentinelDiscovery:
    """The client side of the Sentinel protocol (redis.io 'Sentinel client spec'): ask the
    Sentinels in order for the master's address; the first one that answers is moved to the
    front; then check ROLE on that address and refuse it unless it says master."""

    def __init__(self, sentinels, master_name, timeout):
        self.sentinels = list(sentinels)
        self.name = master_name
        self.timeout = timeout
        self.conns = {}

    def master_addr(self):
        errors = []
        for i, (h, p) in enumerate(self.sentinels):
            c = self.conns.get((h, p))
            try:
                if c is None:
                    c = self.conns[(h, p)] = connect(h, p, None, self.timeout)
                addr = c.execute_command("SENTINEL", "get-master-addr-by-name", self.name)
                if not addr:
                    errors.append(f"{h}:{p}: no master named {self.name}")
                    continue
                if i:
                    self.sentinels.insert(0, self.sentinels.pop(i))
                return addr[0], int(addr[1]), f"{h}:{p}"
            except Stop:
                raise
            except Exception as e:
                close(c)
                self.conns.pop((h, p), None)
                errors.append(f"{h}:{p}: {_errstr(e)}")
        raise CanaryError("no Sentinel answered: " + "; ".join(errors))

    def close(self):
        for c in self.conns.values():
            close(c)
        self.conns = {}


# --------------------------------------------------------------------------- run
def cmd_run(args):
    stop = {"flag": False, "reason": None, "in_call": False}

    def on_signal(signum, _frame):
        stop["flag"] = True
        stop["reason"] = signal.Signals(signum).name
        if stop["in_call"]:
            raise Stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    password = load_password(args)
    if bool(args.addr) == bool(args.sentinels):
        sys.stderr.write("run: give exactly one of --addr or --sentinels\n")
        return 2
    disc = SentinelDiscovery(args.sentinels, args.master_name, args.connect_timeout) if args.sentinels else None

    log = open(args.log, "a", buffering=1 << 16)
    last_flush = time.monotonic()

    def emit(obj, force=False):
        nonlocal last_flush
        log.write(json.dumps(obj, separators=(",", ":")) + "\n")
        m = time.monotonic()
        if force or m - last_flush >= args.flush_every:
            log.flush()
            last_flush = m

    def open_master():
        """-> (conn, 'host:port'); raises with the phase set in the exception."""
        if disc:
            try:
                host, port, via = disc.master_addr()
            except CanaryError as e:
                e.phase = "discover"
                raise
        else:
            (host, port), via = args.addr, None
        try:
            c = connect(host, port, password, args.connect_timeout, args.socket_timeout)
            if disc:
                role = c.execute_command("ROLE")
                if not role or role[0] != "master":
                    close(c)
                    raise CanaryError(f"{host}:{port} (named by Sentinel {via}) reports role "
                                      f"{role[0] if role else None}, not master")
        except Stop:
            raise
        except Exception as e:
            e.phase = getattr(e, "phase", "connect")
            e.srv = f"{host}:{port}"
            raise
        be, rid = _backend(c)
        emit({"ev": "connect", "t": _r(_now()), "srv": f"{host}:{port}", "via": via, "backend": be,
              "run_id": rid})
        return c, f"{host}:{port}"

    # ---- setup: wait until the endpoint answers (bounded) ----
    t_start = _now()
    deadline = time.monotonic() + args.setup_timeout
    conn, srv = None, None
    while conn is None:
        if stop["flag"]:
            emit({"ev": "stop", "t": _r(_now()), "reason": stop["reason"] or "signal", "during": "setup"}, True)
            return 1
        try:
            stop["in_call"] = True
            conn, srv = open_master()
            stop["in_call"] = False
        except Stop:
            continue
        except Exception as e:
            stop["in_call"] = False
            if time.monotonic() > deadline:
                emit({"ev": "stop", "t": _r(_now()), "reason": "setup failed: " + _errstr(e)}, True)
                sys.stderr.write(f"canary: setup failed: {_errstr(e)}\n")
                return 1
            time.sleep(0.2)
    seq = args.start_seq
    emit({"ev": "start", "t": _r(t_start), "t_ready": _r(_now()), "version": VERSION, "pid": os.getpid(),
          "interval_s": args.interval, "start_seq": seq, "key_prefix": args.prefix,
          "wait": [args.wait_replicas, args.wait_timeout_ms], "mode": "sentinel" if disc else "addr",
          "target": ([f"{h}:{p}" for h, p in args.sentinels] + [args.master_name]) if disc
          else f"{args.addr[0]}:{args.addr[1]}",
          "backoff_s": [args.backoff_min, args.backoff_max],
          "timeouts_s": {"connect": args.connect_timeout, "socket": args.socket_timeout},
          "host": os.uname().nodename}, True)
    fresh = True  # the first write is on the setup connection: it counts as a new one

    backoff = args.backoff_min
    t_end = time.monotonic() + args.duration if args.duration else None
    t_hard = time.monotonic() + args.max_duration
    next_slot = time.monotonic()
    n_ack = n_err = 0
    key = args.prefix + "{}"

    while not stop["flag"]:
        m = time.monotonic()
        if (t_end and m >= t_end) or m >= t_hard:
            stop["reason"] = "duration" if (t_end and m >= t_end) else "max-duration"
            break
        if m < next_slot:
            try:
                time.sleep(next_slot - m)
            except Stop:
                break
            if stop["flag"]:
                break
        next_slot = max(next_slot + args.interval, time.monotonic())

        rec = {"seq": seq, "t_send": _r(_now())}
        phase = "connect"
        try:
            stop["in_call"] = True
            new_conn = conn is None
            if new_conn:
                conn, srv = open_master()
            phase = "set"
            ok = conn.set(key.format(seq), seq)
            if ok is not True:
                raise CanaryError(f"SET answered {ok!r}")
            rec["set_ok"] = True
            phase = "wait"
            n = int(conn.execute_command("WAIT", args.wait_replicas, args.wait_timeout_ms))
            rec["wait_n"] = n
            t1 = _now()
            stop["in_call"] = False
            rec["srv"] = srv
            if n < args.wait_replicas:
                raise CanaryError(f"WAIT {args.wait_replicas} {args.wait_timeout_ms} returned {n}")
            rec["t_ack"] = _r(t1)
            if new_conn or fresh:
                rec["new_conn"] = True
                fresh = False
            backoff = args.backoff_min
            n_ack += 1
            emit(rec)
        except Stop:
            stop["in_call"] = False
            rec["t_err"] = _r(_now())
            rec["err"] = "interrupted by " + str(stop["reason"]) + " (outcome unknown)"
            rec["phase"] = phase
            emit(rec, True)
            break
        except Exception as e:
            stop["in_call"] = False
            rec["t_err"] = _r(_now())
            rec["err"] = _errstr(e)
            rec["phase"] = getattr(e, "phase", phase)
            if getattr(e, "srv", None) or srv:
                rec["srv"] = getattr(e, "srv", None) or srv
            n_err += 1
            emit(rec, True)
            close(conn)
            conn, srv = None, None
            try:
                time.sleep(backoff)
            except Stop:
                break
            backoff = min(backoff * 2, args.backoff_max)
        finally:
            seq += 1

    close(conn)
    if disc:
        disc.close()
    emit({"ev": "stop", "t": _r(_now()), "reason": stop["reason"] or "signal", "last_seq": seq - 1,
          "acked": n_ack, "errors": n_err}, True)
    log.close()
    return 0


# --------------------------------------------------------------------------- verify
def read_log(path):
    attempts, events, bad = [], [], 0
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                o = json.loads(line)
            except ValueError:
                bad += 1  # a torn last line after a hard kill
                continue
            (attempts if "seq" in o else events).append(o)
    attempts.sort(key=lambda o: o["seq"])
    return attempts, events, bad


def _pct(vals, p):
    if not vals:
        return None
    s = sorted(vals)
    k = max(0, min(len(s) - 1, int(math.ceil(p / 100.0 * len(s))) - 1))
    return s[k]


def _parse_fault(v):
    if v is None:
        return None
    if v.startswith("@"):
        with open(v[1:]) as f:
            v = f.read().strip()
    return float(v)


def _segments(acks):
    segs = []
    for a in acks:
        s = a.get("srv")
        if segs and segs[-1]["srv"] == s:
            segs[-1]["last_seq"] = a["seq"]
            segs[-1]["count"] += 1
            segs[-1]["t_last"] = a["t_ack"]
        else:
            segs.append({"srv": s, "first_seq": a["seq"], "last_seq": a["seq"], "count": 1,
                         "t_first": a["t_ack"], "t_last": a["t_ack"]})
    return segs


def analyse(attempts, events, present, fault_ts=None, server_info=None):
    """Pure: log + set of seqs present on the final primary -> metrics (the same fields and
    definitions as canary.py's analyse, so the PostgreSQL and Redis results read alike)."""
    acks = [a for a in attempts if a.get("t_ack") is not None]
    errs = [a for a in attempts if a.get("t_ack") is None]
    res = {
        "attempts": len(attempts), "acked": len(acks), "failed_attempts": len(errs),
        "failed_set_ok_wait_short": sum(1 for a in errs if a.get("set_ok")),
        "first_seq": attempts[0]["seq"] if attempts else None,
        "last_seq": attempts[-1]["seq"] if attempts else None,
        "t_first_attempt": attempts[0]["t_send"] if attempts else None,
        "t_last_attempt": max((a.get("t_ack") or a.get("t_err") or a["t_send"]) for a in attempts) if attempts else None,
    }
    stop_ev = [e for e in events if e.get("ev") == "stop"]
    t_end = stop_ev[-1]["t"] if stop_ev else res["t_last_attempt"]

    # ---- safety ----
    acked_set = {a["seq"] for a in acks}
    lost = sorted(acked_set - present)
    attempted = {a["seq"] for a in attempts}
    res["lost_acked"] = len(lost)
    res["lost_acked_seqs"] = lost[:100]
    if lost:
        by_seq = {a["seq"]: a for a in acks}
        res["lost_acked_first"] = {k: by_seq[lost[0]].get(k) for k in ("seq", "t_ack", "srv")}
        res["lost_acked_last"] = {k: by_seq[lost[-1]].get(k) for k in ("seq", "t_ack", "srv")}
    res["unacked_but_committed"] = len({a["seq"] for a in errs} & present)
    res["present_not_attempted"] = len(present - attempted)

    # ---- availability ----
    max_gap, gi = 0.0, None
    for i in range(1, len(acks)):
        g = acks[i]["t_ack"] - acks[i - 1]["t_ack"]
        if g > max_gap:
            max_gap, gi = g, i
    recovered = True
    if fault_ts is not None:
        fe = next((a for a in errs if (a.get("t_err") or a["t_send"]) >= fault_ts), None)
        t_out = fe["t_err"] if fe else fault_ts
        after = [a for a in acks if a["t_ack"] > t_out]
        before = [a for a in acks if a["t_ack"] <= t_out]
        recovered = bool(after)
        if not after and t_end is not None and before:
            open_gap = t_end - before[-1]["t_ack"]
            if open_gap > max_gap:
                max_gap, gi = open_gap, None
    res["rto_max_gap_s"] = _r(max_gap, 4)
    if gi is not None:
        a0, a1 = acks[gi - 1], acks[gi]
        res["max_gap"] = {"from_seq": a0["seq"], "to_seq": a1["seq"], "t_from": a0["t_ack"], "t_to": a1["t_ack"],
                          "srv_from": a0.get("srv"), "srv_to": a1.get("srv")}
    else:
        res["max_gap"] = None

    def window(t_lo_ack, t_hi_ack):
        fails = [a for a in errs if t_lo_ack < a["t_send"] < (t_hi_ack if t_hi_ack is not None else float("inf"))]
        w = {"last_ack_before": t_lo_ack, "first_ack_after": t_hi_ack,
             "duration_s": _r(t_hi_ack - t_lo_ack, 4) if t_hi_ack is not None else None,
             "failed_attempts": len(fails)}
        if fails:
            w["first_error_at"] = fails[0]["t_err"]
            w["first_error"] = fails[0]["err"]
            w["last_error"] = fails[-1]["err"]
            w["error_span_s"] = _r((t_hi_ack if t_hi_ack is not None else fails[-1]["t_err"]) - fails[0]["t_send"], 4)
            phases = {}
            for a in fails:
                phases[a.get("phase")] = phases.get(a.get("phase"), 0) + 1
            w["failed_by_phase"] = phases
        return w

    res["unavailability"] = window(res["max_gap"]["t_from"], res["max_gap"]["t_to"]) if res["max_gap"] else None
    res["fault_ts"] = fault_ts
    res["recovered"] = recovered
    if fault_ts is not None:
        # The outage starts at the first failed attempt that ends after fault_ts; acks that slip
        # in between fault_ts and that failure are counted but do not end the outage.
        first_err = next((a for a in errs if (a.get("t_err") or a["t_send"]) >= fault_ts), None)
        t_out = first_err["t_err"] if first_err else fault_ts
        before = [a for a in acks if a["t_ack"] <= t_out]
        after = [a for a in acks if a["t_ack"] > t_out]
        res["recovered"] = recovered = bool(after)
        res["fault_to_first_error_s"] = _r(first_err["t_err"] - fault_ts, 4) if first_err else None
        res["acks_between_fault_and_first_error"] = sum(1 for a in before if a["t_ack"] > fault_ts)
        res["fault_to_first_ack_s"] = _r(after[0]["t_ack"] - fault_ts, 4) if after else None
        res["last_ack_age_at_fault_s"] = _r(fault_ts - before[-1]["t_ack"], 4) if before and before[-1]["t_ack"] <= fault_ts else 0.0
        res["first_ack_after_fault_srv"] = after[0].get("srv") if after else None
        res["fault_window"] = window(before[-1]["t_ack"], after[0]["t_ack"] if after else None) if before else None
        res["acked_after_fault"] = len(after)
        res["failed_after_fault"] = sum(1 for a in errs if (a.get("t_err") or a["t_send"]) >= fault_ts)
    else:
        res["fault_to_first_ack_s"] = None

    lat = [(a["t_ack"] - a["t_send"]) * 1000.0 for a in acks if not a.get("new_conn")]
    res["ack_latency_ms"] = {"p50": _r(_pct(lat, 50), 3), "p99": _r(_pct(lat, 99), 3),
                             "max": _r(max(lat), 3) if lat else None}
    segs = _segments(acks)
    res["server_segments"] = segs[:20]
    res["distinct_servers_acking"] = sorted({s["srv"] for s in segs if s["srv"]})
    backends = [e for e in events if e.get("ev") == "connect"]
    res["backends_connected"] = sorted({e.get("backend") or "?" for e in backends})
    if server_info:
        res["verified_on"] = server_info
    res["ok"] = (res["lost_acked"] == 0 and recovered and res["present_not_attempted"] == 0)
    return res


def scan_present(conn, prefix, lo, hi):
    present = set()
    for k in conn.scan_iter(match=prefix + "*", count=1000):
        tail = k[len(prefix):]
        if tail.isdigit():
            s = int(tail)
            if lo <= s <= hi:
                present.add(s)
    return present


def summary_line(res):
    f = res.get("fault_to_first_ack_s")
    return ("canary_redis: attempts={attempts} confirmed={acked} failed={failed} | longest gap={g}s "
            "| fault->first ack={f} | lost confirmed={lost} | unconfirmed but present={uc} | {ok}").format(
        attempts=res["attempts"], acked=res["acked"], failed=res["failed_attempts"], g=res["rto_max_gap_s"],
        f=(f"{f}s" if f is not None else "n/a"), lost=res["lost_acked"], uc=res["unacked_but_committed"],
        ok="OK" if res["ok"] else "NOT OK")


def cmd_verify(args):
    attempts, events, bad = read_log(args.log)
    if not attempts:
        sys.stderr.write("verify: no write attempts in log\n")
        return 2
    fault_ts = _parse_fault(args.fault_ts)
    lo, hi = attempts[0]["seq"], attempts[-1]["seq"]
    password = load_password(args)
    deadline = time.monotonic() + args.connect_wait
    while True:
        c = None
        try:
            if args.sentinels:
                host, port, _ = SentinelDiscovery(args.sentinels, args.master_name, args.timeout).master_addr()
            else:
                host, port = args.addr
            c = connect(host, port, password, args.timeout)
            role = c.execute_command("ROLE")
            repl = c.info("replication")
            srv_info = c.info("server")
            if role[0] != "master" and not args.allow_replica:
                raise CanaryError(f"{host}:{port} is {role[0]}, not master")
            present = scan_present(c, args.prefix, lo, hi)
            break
        except Exception as e:
            close(c)
            if time.monotonic() > deadline:
                sys.stderr.write(f"verify: cannot read the final primary: {_errstr(e)}\n")
                return 2
            time.sleep(0.5)
    close(c)
    server_info = {"addr": host, "port": port, "role": role[0], "run_id": srv_info.get("run_id"),
                   "master_repl_offset": repl.get("master_repl_offset"),
                   "connected_slaves": repl.get("connected_slaves"), "keys_scanned": len(present)}
    res = analyse(attempts, events, present, fault_ts, server_info)
    res["log"] = os.path.abspath(args.log)
    res["torn_log_lines"] = bad
    res["instrument"] = f"canary_redis.py {VERSION}"
    out = res
    if args.meta:
        with open(args.meta) as f:
            out = json.load(f)
        probe = {}
        if args.probe:
            try:
                with open(args.probe) as f:
                    probe = json.load(f)
            except (OSError, ValueError):
                probe = {"promoted": False, "reason": "probe output missing"}
        promoted = probe.get("promoted_detected_at")
        out.setdefault("fault", {})
        if fault_ts is not None:
            out["fault"]["ts"] = fault_ts
        out["kill_to_promoted_s"] = None if promoted is None or fault_ts is None else round(promoted - fault_ts, 3)
        out["promoted_detected_at"] = promoted
        out["probe_resolution_s"] = probe.get("resolution_s")
        sw = probe.get("sentinels_switched_at")
        if sw is not None and fault_ts is not None:
            out.setdefault("system_specific", {})["fault_to_sentinels_switched_s"] = round(sw - fault_ts, 3)
        out["verify"] = res
        out["probe"] = probe
    text = json.dumps(out, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if not args.quiet:
        print(text)
    print(summary_line(res), file=sys.stdout if args.quiet else sys.stderr)
    return 0 if res["ok"] else 1


# --------------------------------------------------------------------------- wait-primary
def cmd_wait_primary(args):
    stop = {"flag": False}

    def on_signal(signum, _frame):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    password = load_password(args)
    nodes = [{"addr": a, "conn": None, "seen_replica": None, "last_replica_at": None, "errors": 0} for a in args.node]
    sents = [{"addr": a, "conn": None, "switched_at": None, "reported": None, "errors": 0} for a in (args.sentinels or [])]
    old = args.old_master
    need_sent = bool(sents) and old is not None
    majority = len(sents) // 2 + 1
    t_begin = _now()
    deadline = time.monotonic() + args.timeout
    ready = False
    result = {"promoted": False}
    sentinels_switched_at = None

    def poll(entry, cmd, pw):
        if entry["conn"] is None:
            entry["conn"] = connect(entry["addr"][0], entry["addr"][1], pw, args.connect_timeout)
        return entry["conn"].execute_command(*cmd)

    while not stop["flag"] and time.monotonic() < deadline:
        if not result.get("promoted"):
            for n in nodes:
                try:
                    t_q = _now()
                    role = poll(n, ("ROLE",), password)
                    t_r = _now()
                    if role[0] != "master":
                        n["seen_replica"] = True
                        n["last_replica_at"] = t_r
                    elif n["seen_replica"]:
                        result = {"promoted": True, "srv": f"{n['addr'][0]}:{n['addr'][1]}",
                                  "promoted_detected_at": _r(t_r), "query_sent_at": _r(t_q),
                                  "last_replica_at": _r(n["last_replica_at"]),
                                  "resolution_s": _r(t_r - n["last_replica_at"], 4)}
                        break
                    elif n["seen_replica"] is None:
                        n["seen_replica"] = False  # already master at start: not a candidate
                except Exception as e:
                    n["errors"] += 1
                    n["last_error"] = _errstr(e)
                    close(n["conn"])
                    n["conn"] = None
        if need_sent and sentinels_switched_at is None:
            for s in sents:
                try:
                    a = poll(s, ("SENTINEL", "get-master-addr-by-name", args.master_name), None)
                    s["reported"] = f"{a[0]}:{a[1]}" if a else None
                    if s["switched_at"] is None and a and (a[0], int(a[1])) != old:
                        s["switched_at"] = _now()
                except Exception as e:
                    s["errors"] += 1
                    s["last_error"] = _errstr(e)
                    close(s["conn"])
                    s["conn"] = None
            done = sorted(s["switched_at"] for s in sents if s["switched_at"] is not None)
            if len(done) >= majority:
                sentinels_switched_at = done[majority - 1]
        if not ready and args.ready_file and any(n["seen_replica"] for n in nodes) \
                and (not need_sent or all(s["reported"] for s in sents)):
            with open(args.ready_file, "w") as f:
                f.write(f"{_now():.6f}\n")
            ready = True
        if result.get("promoted") and (not need_sent or sentinels_switched_at is not None):
            break
        time.sleep(args.interval)
    if not result.get("promoted"):
        result["reason"] = "signal" if stop["flag"] else "timeout"
    result["t_begin"] = _r(t_begin)
    result["nodes"] = [{"addr": f"{n['addr'][0]}:{n['addr'][1]}", "seen_replica": n["seen_replica"],
                        "errors": n["errors"], "last_error": n.get("last_error")} for n in nodes]
    if sents:
        result["sentinels_switched_at"] = _r(sentinels_switched_at)
        result["sentinels"] = [{"addr": f"{s['addr'][0]}:{s['addr'][1]}", "switched_at": _r(s["switched_at"]),
                                "reported": s["reported"], "errors": s["errors"],
                                "last_error": s.get("last_error")} for s in sents]
    for e in nodes + sents:
        close(e["conn"])
    text = json.dumps(result, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0 if result["promoted"] else 1


# --------------------------------------------------------------------------- main
def build_parser():
    p = argparse.ArgumentParser(prog="canary_redis.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd")

    def auth(sp):
        sp.add_argument("--password-file", default=None, help="file holding the Redis password")
        sp.add_argument("--password-env", default="REDIS_PASSWORD",
                        help="else the password is read from this environment variable (REDIS_PASSWORD)")

    w = sub.add_parser("run", help="run the write canary (default)")
    auth(w)
    w.add_argument("--addr", type=_hostport, default=None, help="fixed endpoint host:port (e.g. Lifeboat's)")
    w.add_argument("--sentinels", type=_hostports, default=None, help="host:port,host:port,... of the Sentinels")
    w.add_argument("--master-name", default="mymaster")
    w.add_argument("--log", required=True, help="JSONL output (appended)")
    w.add_argument("--prefix", default="canary:")
    w.add_argument("--interval", type=float, default=0.010, help="seconds between writes (0.010)")
    w.add_argument("--wait-replicas", type=int, default=1, help="WAIT numreplicas (1)")
    w.add_argument("--wait-timeout-ms", type=int, default=500, help="WAIT timeout in ms (500)")
    w.add_argument("--connect-timeout", type=float, default=1.0, help="connect timeout, s (1)")
    w.add_argument("--socket-timeout", type=float, default=1.0,
                   help="per-command socket timeout, s (1); must exceed the WAIT timeout")
    w.add_argument("--backoff-min", type=float, default=0.010)
    w.add_argument("--backoff-max", type=float, default=0.100)
    w.add_argument("--start-seq", type=int, default=1)
    w.add_argument("--duration", type=float, default=0, help="stop after N s (0 = until SIGTERM/SIGINT)")
    w.add_argument("--max-duration", type=float, default=3600, help="hard upper bound on run time (s)")
    w.add_argument("--setup-timeout", type=float, default=30, help="how long to wait for a first connection (s)")
    w.add_argument("--flush-every", type=float, default=0.2, help="log flush period (s); errors flush at once")

    v = sub.add_parser("verify", help="fault->first ack, lost confirmed writes, result JSON")
    auth(v)
    v.add_argument("--log", required=True)
    v.add_argument("--fault-ts", default=None, help="fault time (epoch s) or @file")
    v.add_argument("--addr", type=_hostport, default=None, help="the final primary host:port")
    v.add_argument("--sentinels", type=_hostports, default=None, help="or ask these Sentinels for it")
    v.add_argument("--master-name", default="mymaster")
    v.add_argument("--allow-replica", action="store_true", help="read even if the node is not master")
    v.add_argument("--prefix", default="canary:")
    v.add_argument("--timeout", type=float, default=2.0)
    v.add_argument("--connect-wait", type=float, default=20, help="retry reading the primary for N s")
    v.add_argument("--meta", default=None, help="JSON with the run's metadata: write the whole result JSON")
    v.add_argument("--probe", default=None, help="wait-primary output, merged into the result (with --meta)")
    v.add_argument("--out", default=None)
    v.add_argument("--quiet", action="store_true")

    wp = sub.add_parser("wait-primary", help="neutral promotion probe (ROLE)")
    auth(wp)
    wp.add_argument("--node", type=_hostport, action="append", required=True, help="candidate host:port (repeatable)")
    wp.add_argument("--sentinels", type=_hostports, default=None)
    wp.add_argument("--master-name", default="mymaster")
    wp.add_argument("--old-master", type=_hostport, default=None,
                    help="with --sentinels: also wait until a majority of them name another master")
    wp.add_argument("--timeout", type=float, default=90)
    wp.add_argument("--interval", type=float, default=0.02)
    wp.add_argument("--connect-timeout", type=float, default=1.0)
    wp.add_argument("--out", default=None)
    wp.add_argument("--ready-file", default=None, help="written once a candidate has been seen as a replica")
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS + ("-h", "--help"):
        argv.insert(0, "run")
    args = build_parser().parse_args(argv)
    if args.cmd == "verify" and bool(args.addr) == bool(args.sentinels):
        sys.stderr.write("verify: give exactly one of --addr or --sentinels\n")
        return 2
    return {"run": cmd_run, "verify": cmd_verify, "wait-primary": cmd_wait_primary}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
