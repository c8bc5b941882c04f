#!/usr/bin/env python3
"""PostgreSQL backup benchmark: Lifeboat against pgBackRest, in one sitting, and the recovery
point of Lifeboat's continuous WAL.

  run-postgres.py [--reps N] [--scale S] [--work DIR] [--lifeboat PATH] [--out FILE]
                  [--only backup|recovery-point] [--no-barman] [--rate COMMITS_PER_S]
  run-postgres.py --summarize FILE        (the tables of an earlier run)

Needs, besides the release build: `apt-get install -y pgbackrest barman` and
`python3 -m pip install 'psycopg[binary]'` (the recovery point's client).

1. A PostgreSQL 15 cluster with `pgbench -i -s S` (70: about 1 GiB). Lifeboat (base backups
   read from the data directory, --data-dir; zstd level 1, AES-256-GCM) against pgBackRest 2.45
   (compress-type=zst at its default level, repo1-cipher-type=aes-256-cbc, process-max=2 for
   the 2 cores) and Barman 3.4 (backup_method = postgres: pg_basebackup, the only method
   without SSH; gzip), per repetition:
   - a full backup (Lifeboat --full, pgBackRest --type=full, Barman backup);
   - the rows of the first 5 % of pgbench_accounts' pages updated, then an incremental
     (Lifeboat's default, pgBackRest --type=incr; Barman's postgres method has none);
   - a full restore of the newest backup into an empty directory (Barman: recover latest);
   - a delta restore: 5 % of the largest relation file's pages of each restored directory
     overwritten, then restored again over itself (Lifeboat --delta, pgBackRest --delta:
     both compare content, not sizes and times; Barman has none).
   Wall time and peak memory (max RSS), medians over the repetitions.
2. Recovery point: a second, small cluster takes single-row commits from one client, paced at
   --rate a second (1,800 by default; 0: as fast as it can);
   Lifeboat streams its WAL (`lifeboat wal stream`, upload every 100 ms); at a random moment
   the primary's whole process tree AND the streamer (with its pg_receivewal) are SIGKILLed at
   once. Asynchronous: only what already reached the repository counts. With the synchronous
   archive (synchronous_standby_names = 'FIRST 1 ("lifeboat_wal")', as the daemon manages it)
   the streamer is started again afterwards and uploads its spool. The newest backup is
   restored, started, and the last restored commit compared with the last acknowledged one;
   the client's commit latency is recorded in both modes.
"""
import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PASSWORD = "benchmark passphrase"
PG_BIN = sorted(d for d in (os.path.join("/usr/lib/postgresql", v, "bin") for v in os.listdir("/usr/lib/postgresql")) if os.path.exists(d))[-1]


def sh(cmd, as_postgres=False, env=None, check=True, capture=False):
    if as_postgres:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    r = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r.stdout if capture else r


def timed(cmd, as_postgres=False, env=None):
    """(seconds, peak RSS MiB) of cmd, after flushing dirty pages."""
    subprocess.run(["sync"], check=True)
    if as_postgres:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    if status != 0:
        sys.exit(f"{' '.join(cmd)} failed ({status}):\n{p.stdout.read().decode()[-2000:]}\n{p.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def mkdir_pg(path):
    os.makedirs(path, exist_ok=True)
    shutil.chown(path, "postgres", "postgres")
    os.chmod(path, 0o700)


class Cluster:
    def __init__(self, root, name, extra_conf=""):
        self.data = os.path.join(root, name)
        self.sock = os.path.join(root, f"{name}-sock")
        self.port = free_port()
        mkdir_pg(self.sock)
        sh([f"{PG_BIN}/initdb", "-D", self.data, "--auth=trust", "-U", "postgres"], as_postgres=True)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.sock}'\n"
                    f"wal_level = replica\nmax_wal_senders = 10\nmax_replication_slots = 10\n{extra_conf}\n")
        self.start()

    def start(self):
        sh([f"{PG_BIN}/pg_ctl", "start", "-w", "-D", self.data, "-l", self.data + ".log"], as_postgres=True)

    def stop(self):
        sh([f"{PG_BIN}/pg_ctl", "stop", "-w", "-m", "fast", "-D", self.data], as_postgres=True, check=False)

    def conninfo(self):
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def pids(self):
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            main = int(f.readline())
        return [main] + children(main)


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def psql(pg, sql):
    return sh([f"{PG_BIN}/psql", "-At", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-c", sql], capture=True).strip()


def change_pages(pg, fraction):
    """Updates the rows of the first `fraction` of pgbench_accounts' pages (contiguous aids),
    then checkpoints: about that share of its pages, and of the database, changes."""
    n = int(psql(pg, "SELECT count(*) FROM pgbench_accounts"))
    psql(pg, f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= {int(n * fraction)}")
    psql(pg, "CHECKPOINT")
    time.sleep(1.5)  # files written in the second before a backup are read again by the next


def barman_setup(work, pg):
    """A Barman 3.4 server for `pg`, run as the postgres user: backup_method = postgres
    (pg_basebackup) and a streaming archiver, the only methods without SSH."""
    home = os.path.join(work, "barman-home")
    mkdir_pg(home)
    conf = os.path.join(work, "barman.conf")
    with open(conf, "w") as f:
        f.write(f"""[barman]
barman_home = {home}
barman_user = postgres
log_file = {work}/barman.log
log_level = WARNING
compression = gzip

[bench]
conninfo = host=127.0.0.1 port={pg.port} user=postgres dbname=postgres
streaming_conninfo = host=127.0.0.1 port={pg.port} user=postgres
backup_method = postgres
streaming_archiver = on
slot_name = barman
create_slot = auto
path_prefix = {PG_BIN}
""")
    os.chmod(conf, 0o644)
    b = ["barman", "-c", conf, "-q"]
    sh(b + ["receive-wal", "--create-slot", "bench"], as_postgres=True, check=False)
    sh(b + ["cron"], as_postgres=True)
    # Bounded: until its checks pass (the streaming archiver runs, a WAL file is archived).
    for _ in range(60):
        sh(b + ["switch-wal", "--force", "--archive", "--archive-timeout", "20", "bench"], as_postgres=True, check=False)
        sh(b + ["cron"], as_postgres=True, check=False)
        if sh(b + ["check", "bench"], as_postgres=True, check=False).returncode == 0:
            return b
        time.sleep(1)
    sys.exit("barman check never passed: " + sh(b + ["check", "bench"], as_postgres=True, check=False).stdout)


def bench_backup_restore(a, lifeboat, work, results):
    pg = Cluster(work, "pgbench-data", "archive_mode = on\narchive_command = 'pgbackrest --config=%s --stanza=bench archive-push %%p'\n" % os.path.join(work, "pgbackrest.conf"))
    try:
        print(f"pgbench -i -s {a.scale}", flush=True)
        sh([f"{PG_BIN}/pgbench", "-i", "-q", "-s", str(a.scale), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "postgres"])
        psql(pg, "CHECKPOINT")
        results["database_bytes"] = int(psql(pg, "SELECT pg_database_size('postgres')"))
        for d in ["pgbr-repo", "pgbr-log", "pgbr-lock", "pgbr-spool"]:
            mkdir_pg(os.path.join(work, d))
        conf = os.path.join(work, "pgbackrest.conf")
        with open(conf, "w") as f:
            f.write(f"""[global]
repo1-path={work}/pgbr-repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass={PASSWORD}
compress-type=zst
process-max=2
start-fast=y
log-level-console=warn
log-path={work}/pgbr-log
lock-path={work}/pgbr-lock
spool-path={work}/pgbr-spool

[bench]
pg1-path={pg.data}
pg1-port={pg.port}
pg1-socket-path={pg.sock}
""")
        os.chmod(conf, 0o644)
        br = ["pgbackrest", f"--config={conf}", "--stanza=bench"]
        sh(br + ["stanza-create"], as_postgres=True)
        sh(br + ["check"], as_postgres=True)
        barman = barman_setup(work, pg) if not a.no_barman else None
        time.sleep(1.5)
        for rep in range(a.reps):
            repo = os.path.join(work, f"lb-repo-{rep}")
            env = {"LIFEBOAT_PASSWORD": PASSWORD, "LIFEBOAT_REPO": repo}
            sh([lifeboat, "backup", "init"], env=env)
            lb_backup = [lifeboat, "backup", "run", "--json", "--postgres", pg.conninfo(), "--data-dir", pg.data]
            row = {}
            # Full backups.
            row["lifeboat_full"] = timed(lb_backup + ["--full"], env=env)
            row["pgbackrest_full"] = timed(br + ["--type=full", "backup"], as_postgres=True)
            if barman:
                row["barman_full"] = timed(barman + ["backup", "--wait", "bench"], as_postgres=True)
            # 5 % of the pages change; incremental backups.
            change_pages(pg, 0.05)
            row["lifeboat_incremental"] = timed(lb_backup, env=env)
            row["pgbackrest_incremental"] = timed(br + ["--type=incr", "backup"], as_postgres=True)
            # Full restores of the newest backup into an empty directory.
            lb_to, br_to = os.path.join(work, f"lb-restore-{rep}"), os.path.join(work, f"pgbr-restore-{rep}")
            row["lifeboat_restore"] = timed([lifeboat, "restore", "postgres", "--to", lb_to], env=env)
            mkdir_pg(br_to)
            row["pgbackrest_restore"] = timed(br + [f"--pg1-path={br_to}", "restore"], as_postgres=True)
            if barman:
                bm_to = os.path.join(work, f"barman-restore-{rep}")
                mkdir_pg(bm_to)
                row["barman_restore"] = timed(barman + ["recover", "bench", "latest", bm_to], as_postgres=True)
                shutil.rmtree(bm_to)
            # Delta restores: each tool's restore of the newest backup, with 5 % of the
            # table's pages then damaged, restored again over itself.
            for to in (lb_to, br_to):
                damage(to, 0.05)
            row["lifeboat_delta"] = timed([lifeboat, "restore", "postgres", "--delta", "--to", lb_to], env=env)
            row["pgbackrest_delta"] = timed(br + [f"--pg1-path={br_to}", "--delta", "restore"], as_postgres=True)
            for to in (lb_to, br_to):
                shutil.rmtree(to)
            row["lifeboat_repo_mib"] = int(sh(["du", "-sm", repo], capture=True).split()[0])
            shutil.rmtree(repo)
            results["backup_restore"].append(row)
            print("  " + ", ".join(f"{k} {v[0]:.1f} s / {v[1]:.0f} MiB" if isinstance(v, tuple) else f"{k} {v}" for k, v in row.items()), flush=True)
        results["pgbackrest_repo_mib"] = int(sh(["du", "-sm", os.path.join(work, "pgbr-repo")], capture=True).split()[0])
    finally:
        pg.stop()


def damage(data_dir, fraction):
    """Overwrites `fraction` of the 8 KiB pages of the largest relation file of a restored
    data directory, spread through it."""
    base = os.path.join(data_dir, "base")
    files = [os.path.join(r, f) for r, _, fs in os.walk(base) for f in fs]
    largest = max(files, key=os.path.getsize)
    pages = os.path.getsize(largest) // 8192
    step = max(1, int(1 / fraction))
    with open(largest, "r+b") as f:
        for p in range(0, pages, step):
            f.seek(p * 8192)
            f.write(b"\xab" * 8192)


def bench_recovery_point(a, lifeboat, work, results, synchronous):
    """Single-row commits from one client; the primary's whole process tree and the streamer's
    (with its pg_receivewal) are SIGKILLed at once at a random moment. Asynchronous: what had
    reached the repository counts. Synchronous archive (the primary's commits wait for
    lifeboat_wal): the streamer is started again, with the primary gone, and uploads what its
    spool holds, as the daemon does when its host comes back."""
    import psycopg
    key = "recovery_point_sync" if synchronous else "recovery_point"
    for rep in range(a.reps):
        root = os.path.join(work, f"rp-{rep}")
        mkdir_pg(root)
        conf = "synchronous_standby_names = 'FIRST 1 (\"lifeboat_wal\")'\n" if synchronous else ""
        pg = Cluster(root, "data", conf)
        repo = os.path.join(root, "repo")
        env = {"LIFEBOAT_PASSWORD": PASSWORD, "LIFEBOAT_REPO": repo}
        sh([lifeboat, "backup", "init"], env=env)

        def stream():
            return subprocess.Popen([lifeboat, "wal", "stream", "--postgres", pg.conninfo(), "--spool", os.path.join(root, "spool"), "--every", "100ms"],
                                    env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=open(os.path.join(root, "stream.log"), "a"),
                                    start_new_session=True)
        streamer = stream()
        with psycopg.connect(pg.conninfo(), autocommit=True) as c:
            c.execute("CREATE TABLE rp (id bigint PRIMARY KEY, at timestamptz NOT NULL)")
        sh([lifeboat, "backup", "run", "--postgres", pg.conninfo(), "--data-dir", pg.data], env=env)
        time.sleep(2)
        acked = []  # (id, when the client saw the acknowledgement)
        latencies = []
        kill_at = time.monotonic() + random.uniform(10, 20)
        conn = psycopg.connect(pg.conninfo(), autocommit=True)
        i = 0
        began = time.perf_counter()
        while time.monotonic() < kill_at:
            i += 1
            if a.rate:
                # Paced: commit i is due at i / rate; a late commit is not made up for.
                wait = began + i / a.rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            t0 = time.perf_counter()
            conn.execute("INSERT INTO rp VALUES (%s, clock_timestamp())", (i,))
            latencies.append(time.perf_counter() - t0)
            acked.append((i, time.time()))
        victims = pg.pids()
        os.killpg(streamer.pid, signal.SIGKILL)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        streamer.wait()
        conn.close()
        if synchronous:
            again = stream()
            time.sleep(2)
            os.killpg(again.pid, signal.SIGTERM)
            again.wait()
        time.sleep(1)
        to = os.path.join(root, "restored")
        sh([lifeboat, "restore", "postgres", "--to", to], env=env)
        restored = Cluster.__new__(Cluster)
        restored.data, restored.sock, restored.port = to, os.path.join(root, "restored-sock"), free_port()
        mkdir_pg(restored.sock)
        with open(os.path.join(to, "postgresql.auto.conf"), "a") as f:
            f.write(f"port = {restored.port}\nunix_socket_directories = '{restored.sock}'\nsynchronous_standby_names = ''\n")
        restored.start()
        with psycopg.connect(restored.conninfo(), autocommit=True) as c:
            # pg_ctl start -w returns once the server takes read-only connections, which is
            # while it still replays: read only after the replay ended (it promotes then).
            for _ in range(600):
                if not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    break
                time.sleep(0.1)
            else:
                sys.exit(f"{to} did not finish its recovery in 60 s")
            last = c.execute("SELECT coalesce(max(id), 0) FROM rp").fetchone()[0]
        restored.stop()
        last_acked_id, last_acked_time = acked[-1]
        recovered_time = dict(acked).get(last, acked[0][1])
        latencies.sort()
        row = {
            "acked": last_acked_id,
            "recovered": last,
            "lost_acked": max(0, last_acked_id - last),
            "seconds_lost": round(max(0.0, last_acked_time - recovered_time), 3),
            "commits_per_s": round(last_acked_id / max(1e-9, acked[-1][1] - acked[0][1]), 1),
            "latency_ms_median": round(latencies[len(latencies) // 2] * 1000, 3),
            "latency_ms_p99": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
        }
        results[key].append(row)
        print(f"  recovery point ({'synchronous archive' if synchronous else 'asynchronous'}): {row}", flush=True)
        if synchronous and row["lost_acked"]:
            kept = root + f"-lost-{int(time.time())}"
            os.rename(root, kept)
            print(f"  kept {kept} for a look: a synchronous archive lost acknowledged commits", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)


def summarize(results):
    rows = results["backup_restore"]
    if rows:
        print(f"\ndatabase {results['database_bytes'] / 2**30:.2f} GiB (pgbench -s {results['scale']}); n = {len(rows)}; {results['versions']['pgbackrest']}; {results['versions'].get('barman', 'no Barman')}")
        print("| step | Lifeboat s | pgBackRest s | Barman s | faster peer / Lifeboat | Lifeboat peak MiB | pgBackRest peak MiB | Barman peak MiB | Lifeboat / pgBackRest memory |")
        print("|---|---|---|---|---|---|---|---|---|")
        med = statistics.median
        for step, label in [("full", "full backup"), ("incremental", "incremental after 5 % of pages changed"),
                            ("restore", "full restore"), ("delta", "delta restore (5 % of pages damaged)")]:
            lb = [r[f"lifeboat_{step}"] for r in rows]
            br = [r[f"pgbackrest_{step}"] for r in rows]
            bm = [r[f"barman_{step}"] for r in rows if f"barman_{step}" in r]
            lw, bw = med(x[0] for x in lb), med(x[0] for x in br)
            mw = med(x[0] for x in bm) if bm else None
            peer = min(bw, mw) if mw else bw
            lm, bmem = med(x[1] for x in lb), med(x[1] for x in br)
            print(f"| {label} | {lw:.1f} | {bw:.1f} | {f'{mw:.1f}' if mw else '-'} | {peer / lw:.2f}x | {lm:.0f} | {bmem:.0f} | "
                  f"{f'{med(x[1] for x in bm):.0f}' if bm else '-'} | {lm / bmem:.2f}x |")
        print(f"repository MiB: Lifeboat {statistics.median(r['lifeboat_repo_mib'] for r in rows)} per full + incremental, pgBackRest {results['pgbackrest_repo_mib']} for {len(rows)} of each")
    for mode, rp in (("asynchronous", results["recovery_point"]), ("synchronous archive", results.get("recovery_point_sync", []))):
        if not rp:
            continue
        secs = [r["seconds_lost"] for r in rp]
        print(f"\nrecovery point, {mode} (primary and streamer SIGKILLed together): seconds of acknowledged commits not restored, "
              f"median {statistics.median(secs):.3f} [{min(secs):.3f}..{max(secs):.3f}], n = {len(rp)}; "
              f"acknowledged commits lost: {[r['lost_acked'] for r in rp]} at a median {statistics.median(r['commits_per_s'] for r in rp):.0f} commits/s; "
              f"commit latency median {statistics.median(r['latency_ms_median'] for r in rp):.3f} ms, p99 {statistics.median(r['latency_ms_p99'] for r in rp):.3f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scale", type=int, default=70)
    ap.add_argument("--work", default="/tmp/lifeboat-bench/pg")
    ap.add_argument("--lifeboat", default=os.path.join(HERE, "../../target/release/lifeboat"))
    ap.add_argument("--out", default=os.path.join(HERE, "results/postgres.json"))
    ap.add_argument("--only", choices=["backup", "recovery-point"])
    ap.add_argument("--no-barman", action="store_true")
    ap.add_argument("--modes", choices=["both", "async", "sync"], default="both", help="recovery point: which archive modes")
    ap.add_argument("--rate", type=float, default=1800, help="recovery point: commits per second offered (0: as fast as one client can)")
    ap.add_argument("--summarize", metavar="JSON", help="print the tables of an earlier run")
    a = ap.parse_args()
    if a.summarize:
        with open(a.summarize) as f:
            summarize(json.load(f))
        return
    shutil.rmtree(a.work, ignore_errors=True)
    mkdir_pg(a.work)
    os.chmod(os.path.dirname(a.work), 0o755)
    results = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "scale": a.scale, "rate": a.rate, "backup_restore": [], "recovery_point": [],
               "recovery_point_sync": [],
               "versions": {"pgbackrest": sh(["pgbackrest", "version"], capture=True).strip(), "postgres": PG_BIN}}
    if not a.no_barman:
        results["versions"]["barman"] = sh(["barman", "--version"], capture=True).strip().splitlines()[0]
    if a.only != "recovery-point":
        bench_backup_restore(a, a.lifeboat, a.work, results)
    if a.only != "backup":
        if a.modes in ("both", "async"):
            bench_recovery_point(a, a.lifeboat, a.work, results, synchronous=False)
        if a.modes in ("both", "sync"):
            bench_recovery_point(a, a.lifeboat, a.work, results, synchronous=True)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=1)
    summarize(results)


if __name__ == "__main__":
    main()
