"""Tests per second through the sandbox vs a plain subprocess per test.

    python benchmarks/programs.py [--reps 5] [--programs 40] [--tests 10] [--workers 2]

Workload: `--programs` stdin programs (read numbers, print them sorted), each run on `--tests`
inputs, `--workers` at a time (threads, as the trainer's tool pool runs them). Three ways:
- plain: `python -I -c program` in a fresh subprocess per test (no isolation at all: the baseline);
- sandbox per program: one sandbox per program running all its tests (each test a fresh
  child inside), as the code task judges a candidate;
- sandbox per test: a new sandbox for every test (the worst case).
Every output is checked, so no way is timed doing less work. Repetitions interleave the ways;
medians are reported with the ratio to plain measured in the same run.
"""
from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, save, table  # noqa: E402

import sandbox  # noqa: E402

PROGRAM = "import sys\nxs = sorted(map(int, sys.stdin.read().split()))\nprint(' '.join(map(str, xs)))\n"


def expected(x: str) -> str:
    return " ".join(map(str, sorted(map(int, x.split()))))


def plain(inputs: list[str]) -> list[str]:
    return [subprocess.run([sys.executable, "-I", "-c", PROGRAM], input=x, capture_output=True, text=True,
                           timeout=10).stdout for x in inputs]


def per_program(inputs: list[str]) -> list[str]:
    return [r.out for r in sandbox.run_stdin(PROGRAM, inputs)]


def per_test(inputs: list[str]) -> list[str]:
    return [sandbox.run_stdin(PROGRAM, [x])[0].out for x in inputs]


WAYS = {"plain subprocess per test": plain, "sandbox per program": per_program,
        "sandbox per test": per_test}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--programs", type=int, default=40)
    ap.add_argument("--tests", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    sandbox.check_available()
    rng = random.Random(0)
    jobs = [[" ".join(str(rng.randrange(1000)) for _ in range(20)) for _ in range(args.tests)]
            for _ in range(args.programs)]
    n = args.programs * args.tests
    rates: dict[str, list[float]] = {w: [] for w in WAYS}
    with ThreadPoolExecutor(args.workers) as pool:
        for _ in range(args.reps):
            for name, way in WAYS.items():
                t0 = time.perf_counter()
                outs = list(pool.map(way, jobs))
                dt = time.perf_counter() - t0
                assert all(o.strip() == expected(x) for xs, os_ in zip(jobs, outs) for x, o in zip(xs, os_)), name
                rates[name].append(n / dt)
    med = {k: median(v) for k, v in rates.items()}
    base = med["plain subprocess per test"]
    print(f"{args.programs} programs x {args.tests} tests, {args.workers} workers, reps={args.reps}")
    print(table([[k, v, v / base] for k, v in med.items()], ["way", "tests/s (median)", "ratio to plain"]))
    print(f"wrote {save('programs', {'args': vars(args), 'tests_per_s': rates, 'median': med})}")


if __name__ == "__main__":
    main()
