#!/usr/bin/env python3
"""Directory backup benchmark: Lifeboat against restic, in one sitting, on the same data set.

  run-dirs.py [--reps N] [--data DIR] [--work DIR] [--lifeboat PATH] [--out FILE]

Per repetition, for each tool on a fresh repository (both encrypt and compress): first backup,
second backup after gen-data.py --mutate changed 5% of the files, full restore of the second
snapshot, full data check. Wall time and peak memory (max RSS of the process) of each step;
medians and ratios (restic / Lifeboat) at the end, raw figures in JSON. Needs, besides the
release build, `apt-get install -y restic`.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PASSWORD = "benchmark passphrase"


def run(cmd, env=None):
    """Runs cmd after flushing dirty pages (so one step's writeback does not slow the next),
    returns (seconds, peak RSS in MiB); fails loudly."""
    subprocess.run(["sync"], check=True)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    out, err = p.stdout.read(), p.stderr.read()
    if status != 0:
        sys.exit(f"{' '.join(cmd)} failed ({status}):\n{out.decode()[-2000:]}\n{err.decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def tools(lifeboat, work):
    lb_repo, rs_repo = os.path.join(work, "lb-repo"), os.path.join(work, "restic-repo")
    lb_env = {"LIFEBOAT_PASSWORD": PASSWORD, "LIFEBOAT_REPO": lb_repo}
    rs_env = {"RESTIC_PASSWORD": PASSWORD, "RESTIC_REPOSITORY": rs_repo, "RESTIC_CACHE_DIR": os.path.join(work, "restic-cache")}
    return {
        "lifeboat": dict(
            repo=lb_repo, env=lb_env,
            init=[lifeboat, "backup", "init"],
            backup=lambda d: [lifeboat, "backup", "run", "--source", "bench", d],
            restore=lambda to: [lifeboat, "restore", "latest", "--to", to],
            check=[lifeboat, "backup", "verify", "--read-data"],
        ),
        "restic": dict(
            repo=rs_repo, env=rs_env,
            init=["restic", "init", "-q"],
            backup=lambda d: ["restic", "backup", "-q", "--host", "bench", d],
            restore=lambda to: ["restic", "restore", "-q", "latest", "--target", to],
            check=["restic", "check", "-q", "--read-data"],
        ),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--data", default="/tmp/lifeboat-bench/data")
    ap.add_argument("--work", default="/tmp/lifeboat-bench/work")
    ap.add_argument("--lifeboat", default=os.path.join(HERE, "../../target/release/lifeboat"))
    ap.add_argument("--out", default=os.path.join(HERE, "results/dirs.json"))
    a = ap.parse_args()
    versions = {
        "restic": subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.strip(),
        "lifeboat": subprocess.run([a.lifeboat, "--version"], capture_output=True, text=True).stdout.strip(),
    }
    results = {"lifeboat": [], "restic": []}
    for rep in range(a.reps):
        print(f"repetition {rep + 1}/{a.reps}: generating the data set", flush=True)
        subprocess.run([sys.executable, os.path.join(HERE, "gen-data.py"), a.data], check=True, stdout=subprocess.DEVNULL)
        shutil.rmtree(a.work, ignore_errors=True)
        os.makedirs(a.work)
        t = tools(a.lifeboat, a.work)
        # Warm the page cache the same way for both.
        subprocess.run(["tar", "cf", "/dev/null", a.data], check=True)
        rows = {name: {} for name in t}
        for name, tool in t.items():
            run(tool["init"], tool["env"])
            rows[name]["first_backup"] = run(tool["backup"](a.data), tool["env"])
        subprocess.run([sys.executable, os.path.join(HERE, "gen-data.py"), a.data, "--mutate"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["tar", "cf", "/dev/null", a.data], check=True)
        for name, tool in t.items():
            rows[name]["second_backup"] = run(tool["backup"](a.data), tool["env"])
        for name, tool in t.items():
            to = os.path.join(a.work, f"{name}-restore")
            rows[name]["restore"] = run(tool["restore"](to), tool["env"])
            shutil.rmtree(to)
        for name, tool in t.items():
            rows[name]["check"] = run(tool["check"], tool["env"])
            rows[name]["repo_mib"] = int(subprocess.run(["du", "-sm", tool["repo"]], capture_output=True, text=True).stdout.split()[0])
        for name in t:
            results[name].append(rows[name])
            print(f"  {name}: " + ", ".join(
                f"{k} {v[0]:.1f} s / {v[1]:.0f} MiB" if isinstance(v, tuple) else f"{k} {v}" for k, v in rows[name].items()), flush=True)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"when": time.strftime("%Y-%m-%d %H:%M:%S"), "versions": versions, "results": results}, f, indent=1)
    print(f"\n| step | Lifeboat s (median) | restic s (median) | restic / Lifeboat | Lifeboat peak MiB | restic peak MiB |")
    print("|---|---|---|---|---|---|")
    for step in ["first_backup", "second_backup", "restore", "check"]:
        lb = [r[step] for r in results["lifeboat"]]
        rs = [r[step] for r in results["restic"]]
        lw, rw = statistics.median(x[0] for x in lb), statistics.median(x[0] for x in rs)
        lm, rm = statistics.median(x[1] for x in lb), statistics.median(x[1] for x in rs)
        print(f"| {step.replace('_', ' ')} | {lw:.1f} | {rw:.1f} | {rw / lw:.2f}x | {lm:.0f} | {rm:.0f} |")
    print(f"\nrepository size MiB (median): Lifeboat {statistics.median(r['repo_mib'] for r in results['lifeboat'])}, "
          f"restic {statistics.median(r['repo_mib'] for r in results['restic'])}; n = {a.reps}; {versions['restic']}")


if __name__ == "__main__":
    main()
