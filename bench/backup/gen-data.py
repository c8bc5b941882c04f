#!/usr/bin/env python3
"""Reproducible mixed data set for the backup benchmark.

  gen-data.py DIR [--seed N] [--scale F]     create (or reset) the data set in DIR
  gen-data.py DIR --mutate [--seed N]        change 5% of its files (appends and in-place edits)

About 2 GiB in about 60k files at scale 1: many small files, fewer medium ones, a few large
ones; half the content compressible text, half random; 5% of files are copies of others.
"""
import argparse
import os
import random
import shutil

WORDS = (b"lifeboat failover backup restore replica primary standby region wal segment "
         b"checkpoint snapshot chunk pack index verify prune retention drill incident ").split()


def text(rng, n):
    out = bytearray()
    while len(out) < n:
        line = b" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
        out += b"%d %s\n" % (rng.randint(0, 10**9), line)
    return bytes(out[:n])


def content(rng, n):
    return text(rng, n) if rng.random() < 0.5 else rng.randbytes(n)


def plan(seed, scale):
    """(relative path, size, duplicate-of or None) for every file, deterministically."""
    rng = random.Random(seed)
    files = []
    def add(kind, count, sizer):
        for i in range(int(count * scale)):
            d = f"{kind}/d{i % 37:02d}/e{(i // 37) % 17:02d}"
            files.append((f"{d}/{kind}-{i:06d}.dat", sizer()))
    add("small", 57000, lambda: min(int(rng.lognormvariate(8.6, 1.0)), 256 * 1024))
    add("medium", 2800, lambda: rng.randint(64 * 1024, 560 * 1024))
    add("large", 20, lambda: rng.randint(10 * 2**20, 50 * 2**20))
    out = []
    for path, size in files:
        dup = rng.choice(out)[0] if out and rng.random() < 0.05 else None
        out.append((path, size, dup))
    return out


def generate(root, seed, scale):
    if os.path.exists(root):
        shutil.rmtree(root)
    rng = random.Random(seed + 1)
    total = 0
    for path, size, dup in plan(seed, scale):
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        if dup:
            shutil.copyfile(os.path.join(root, dup), full)
            total += os.path.getsize(full)
        else:
            with open(full, "wb") as f:
                f.write(content(rng, size))
            total += size
    return total


def mutate(root, seed):
    rng = random.Random(seed + 2)
    paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    chosen = rng.sample(paths, len(paths) // 20)
    for i, p in enumerate(chosen):
        size = os.path.getsize(p)
        if i % 2 == 0 or size < 16:
            with open(p, "ab") as f:
                f.write(content(rng, rng.randint(100, 20000)))
        else:
            with open(p, "r+b") as f:
                f.seek(rng.randint(0, size - 8))
                f.write(rng.randbytes(min(4096, size // 4 or 1)))
    return len(chosen)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--mutate", action="store_true")
    a = ap.parse_args()
    if a.mutate:
        print(f"changed {mutate(a.dir, a.seed)} files")
    else:
        print(f"wrote {generate(a.dir, a.seed, a.scale) / 2**30:.2f} GiB")
