#!/usr/bin/env python3
"""PostgreSQL backup benchmark: Lifeboat against pgBackRest, in one sitting, and the recovery
point of Lifeboat's continuous WAL.

  run-postgres.py [--reps N] [--scale S] [--work DIR] [--lifeboat PATH] [--out FILE]
                  [--only backup|recovery-point]

Needs, besides the release build: `apt-get install -y pgbackrest` and
`python3 -m pip install 'psycopg[binary]'` (the recovery point's client).

1. A PostgreSQL 15 cluster with `pgbench -i -s S` (70: about 1 GiB). Per repetition, on fresh
   repositories, both with compression and encryption (Lifeboat: zstd level 1, AES-256-GCM;
   pgBackRest: compress-type=zst at its default level, repo1-cipher-type=aes-256-cbc,
   process-max=2 for the 2 cores): a full backup, then a full restore into an empty directory.
   Wall time and peak memory (max RSS).
2. Recovery point: a second, small cluster takes single-row commits as fast as one client can;
   Lifeboat streams its WAL (`lifeboat wal stream`, upload every 1 s); at a random moment the
   primary's whole process tree AND the streamer (with its pg_receivewal) are SIGKILLed at once,
   so only what already reached the repository counts. The newest backup is restored, started,
   and the last restored commit compared with the last acknowledged one.
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


def bench_backup_restore(a, lifeboat, work, results):
    pg = Cluster(work, "pgbench-data", "archive_mode = on\narchive_command = 'pgbackrest --config=%s --stanza=bench archive-push %%p'\n" % os.path.join(work, "pgbackrest.conf"))
    try:
        print(f"pgbench -i -s {a.scale}", flush=True)
        sh([f"{PG_BIN}/pgbench", "-i", "-q", "-s", str(a.scale), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "postgres"])
        size = sh([f"{PG_BIN}/psql", "-At", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-c", "SELECT pg_database_size('postgres')"], capture=True).strip()
        results["database_bytes"] = int(size)
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
        sh(["pgbackrest", f"--config={conf}", "--stanza=bench", "stanza-create"], as_postgres=True)
        sh(["pgbackrest", f"--config={conf}", "--stanza=bench", "check"], as_postgres=True)
        for rep in range(a.reps):
            repo = os.path.join(work, f"lb-repo-{rep}")
            env = {"LIFEBOAT_PASSWORD": PASSWORD, "LIFEBOAT_REPO": repo}
            sh([lifeboat, "backup", "init"], env=env)
            row = {}
            row["lifeboat_backup"] = timed([lifeboat, "backup", "run", "--postgres", pg.conninfo()], env=env)
            row["pgbackrest_backup"] = timed(["pgbackrest", f"--config={conf}", "--stanza=bench", "--type=full", "backup"], as_postgres=True)
            to = os.path.join(work, f"lb-restore-{rep}")
            row["lifeboat_restore"] = timed([lifeboat, "restore", "postgres", "--to", to], env=env)
            shutil.rmtree(to)
            to = os.path.join(work, f"pgbr-restore-{rep}")
            mkdir_pg(to)
            row["pgbackrest_restore"] = timed(["pgbackrest", f"--config={conf}", "--stanza=bench", f"--pg1-path={to}", "restore"], as_postgres=True)
            shutil.rmtree(to)
            row["lifeboat_repo_mib"] = int(sh(["du", "-sm", repo], capture=True).split()[0])
            shutil.rmtree(repo)
            results["backup_restore"].append(row)
            print("  " + ", ".join(f"{k} {v[0]:.1f} s / {v[1]:.0f} MiB" if isinstance(v, tuple) else f"{k} {v}" for k, v in row.items()), flush=True)
        results["pgbackrest_repo_mib"] = int(sh(["du", "-sm", os.path.join(work, "pgbr-repo")], capture=True).split()[0])
    finally:
        pg.stop()


def bench_recovery_point(a, lifeboat, work, results):
    import psycopg
    for rep in range(a.reps):
        root = os.path.join(work, f"rp-{rep}")
        mkdir_pg(root)
        pg = Cluster(root, "data")
        repo = os.path.join(root, "repo")
        env = {"LIFEBOAT_PASSWORD": PASSWORD, "LIFEBOAT_REPO": repo}
        sh([lifeboat, "backup", "init"], env=env)
        with psycopg.connect(pg.conninfo(), autocommit=True) as c:
            c.execute("CREATE TABLE rp (id bigint PRIMARY KEY, at timestamptz NOT NULL)")
        sh([lifeboat, "backup", "run", "--postgres", pg.conninfo()], env=env)
        streamer = subprocess.Popen([lifeboat, "wal", "stream", "--postgres", pg.conninfo(), "--spool", os.path.join(root, "spool"), "--every", "1s"],
                                    env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=open(os.path.join(root, "stream.log"), "w"))
        time.sleep(2)
        acked = []  # (id, commit time as the client saw the acknowledgement)
        kill_at = time.monotonic() + random.uniform(10, 20)
        conn = psycopg.connect(pg.conninfo(), autocommit=True)
        i = 0
        victims = pg.pids() + [streamer.pid] + children(streamer.pid)
        while time.monotonic() < kill_at:
            i += 1
            conn.execute("INSERT INTO rp VALUES (%s, clock_timestamp())", (i,))
            acked.append((i, time.time()))
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        streamer.wait()
        conn.close()
        time.sleep(1)
        to = os.path.join(root, "restored")
        sh([lifeboat, "restore", "postgres", "--to", to], env=env)
        restored = Cluster.__new__(Cluster)
        restored.data, restored.sock, restored.port = to, os.path.join(root, "restored-sock"), free_port()
        mkdir_pg(restored.sock)
        with open(os.path.join(to, "postgresql.auto.conf"), "a") as f:
            f.write(f"port = {restored.port}\nunix_socket_directories = '{restored.sock}'\n")
        restored.start()
        with psycopg.connect(restored.conninfo()) as c:
            last = c.execute("SELECT coalesce(max(id), 0) FROM rp").fetchone()[0]
        restored.stop()
        last_acked_id, last_acked_time = acked[-1]
        recovered_time = dict(acked).get(last, 0)
        row = {
            "acked": last_acked_id,
            "recovered": last,
            "lost_acked": last_acked_id - last,
            "seconds_lost": round(last_acked_time - recovered_time, 3) if last else None,
            "commits_per_s": round(last_acked_id / max(1e-9, acked[-1][1] - acked[0][1]), 1),
        }
        results["recovery_point"].append(row)
        print(f"  recovery point: {row}", flush=True)
        shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scale", type=int, default=70)
    ap.add_argument("--work", default="/tmp/lifeboat-bench/pg")
    ap.add_argument("--lifeboat", default=os.path.join(HERE, "../../target/release/lifeboat"))
    ap.add_argument("--out", default=os.path.join(HERE, "results/postgres.json"))
    ap.add_argument("--only", choices=["backup", "recovery-point"])
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    mkdir_pg(a.work)
    os.chmod(os.path.dirname(a.work), 0o755)
    results = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "scale": a.scale, "backup_restore": [], "recovery_point": [],
               "versions": {"pgbackrest": sh(["pgbackrest", "version"], capture=True).strip(), "postgres": PG_BIN}}
    if a.only != "recovery-point":
        bench_backup_restore(a, a.lifeboat, a.work, results)
    if a.only != "backup":
        bench_recovery_point(a, a.lifeboat, a.work, results)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=1)
    rows = results["backup_restore"]
    if rows:
        print(f"\ndatabase {results['database_bytes'] / 2**30:.2f} GiB (pgbench -s {a.scale}); n = {len(rows)}; {results['versions']['pgbackrest']}")
        print("| step | Lifeboat s (median) | pgBackRest s (median) | pgBackRest / Lifeboat | Lifeboat peak MiB | pgBackRest peak MiB |")
        print("|---|---|---|---|---|---|")
        for step in ["backup", "restore"]:
            lb = [r[f"lifeboat_{step}"] for r in rows]
            br = [r[f"pgbackrest_{step}"] for r in rows]
            lw, bw = statistics.median(x[0] for x in lb), statistics.median(x[0] for x in br)
            print(f"| full {step} | {lw:.1f} | {bw:.1f} | {bw / lw:.2f}x | {statistics.median(x[1] for x in lb):.0f} | {statistics.median(x[1] for x in br):.0f} |")
        print(f"repository MiB: Lifeboat {statistics.median(r['lifeboat_repo_mib'] for r in rows)} per backup, pgBackRest {results['pgbackrest_repo_mib']} for {len(rows)} backups")
    rp = results["recovery_point"]
    if rp:
        secs = [r["seconds_lost"] for r in rp if r["seconds_lost"] is not None]
        print(f"\nrecovery point (primary and streamer SIGKILLed together): seconds of acknowledged commits not restored, "
              f"median {statistics.median(secs):.2f} [{min(secs):.2f}..{max(secs):.2f}], n = {len(rp)}; "
              f"acknowledged commits lost: {[r['lost_acked'] for r in rp]} at ~{statistics.median(r['commits_per_s'] for r in rp):.0f} commits/s")


if __name__ == "__main__":
    main()
