"""Memory stability: resident memory of a training run at step 10 and at the last step.

    python benchmarks/memory.py [--steps 100] [--repeats 5] [hydra overrides]

Runs `marl.train +exp=planning` (the default settings, evaluation every 20 steps included) for
`--steps` steps, `--repeats` times, each run in a process of its own (a process's peak can only
rise, so runs cannot share one), and reads what every run logs at every step:
`system/peak_rss_mb` (the process's peak so far), `system/rss_mb` (current) and
`system/step_peak_rss_mb` (the peak within the step). The figure is the growth of the peak from
step 10 to the last step (goal: under 5%), per run and its median; the step peaks' trend (a
least-squares slope over steps 10..last) tells a leak from the noise of one large step.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, table  # noqa: E402

KEYS = ("system/peak_rss_mb", "system/rss_mb", "system/step_peak_rss_mb")


def one_run(steps: int, overrides: list[str]) -> dict:
    """Train in this process; return {key: {step: MB}} for steps 1..steps."""
    from common import train_metrics
    rows = [r for r in train_metrics(overrides, steps) if "system/peak_rss_mb" in r]
    return {k: {r["step"]: r[k] for r in rows if k in r} for k in KEYS}


def slope(curve: dict[int, float], first: int) -> float:
    """Least-squares slope of MB per step over steps >= first."""
    xs = [s for s in curve if s >= first]
    ys = [curve[s] for s in xs]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args, overrides = ap.parse_known_args()
    if args.steps < 11:  # growth is measured from step 10 on, and a slope needs two steps
        ap.error(f"--steps must be at least 11 (growth is measured from step 10), got {args.steps}")
    if args.child:  # one run; the parent reads the JSON from the last line of stdout
        print(json.dumps(one_run(args.steps, overrides)))
        return
    runs, rows = [], []
    for i in range(args.repeats):
        out = subprocess.run([sys.executable, __file__, "--child", "--steps", str(args.steps), *overrides],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        run = {k: {int(s): v for s, v in c.items()} for k, c in json.loads(out.strip().splitlines()[-1]).items()}
        peak, cur, step_peak = (run[k] for k in KEYS)
        res = {"peak_10": peak[10], "peak_last": peak[args.steps], "growth": peak[args.steps] / peak[10] - 1,
               "rss_10": cur[10], "rss_last": cur[args.steps]}
        if step_peak:
            res["step_peak_slope_mb_per_100_steps"] = 100 * slope(step_peak, 10)
        runs.append({"result": res, "curves": run})
        rows.append([i, f"{res['peak_10']:.0f}", f"{res['peak_last']:.0f}", f"{100 * res['growth']:+.1f}%",
                     f"{res['rss_10']:.0f}", f"{res['rss_last']:.0f}",
                     f"{res.get('step_peak_slope_mb_per_100_steps', float('nan')):+.1f}"])
    med = statistics.median(r["result"]["growth"] for r in runs)
    print(table(rows, ["run", "peak @10 MB", f"peak @{args.steps} MB", "peak growth", "rss @10 MB",
                       f"rss @{args.steps} MB", "step-peak slope MB/100 steps"]))
    print(f"median peak growth over {args.repeats} runs: {100 * med:+.1f}% (goal < 5%)")
    print(f"wrote {save('memory', {'steps': args.steps, 'repeats': args.repeats, 'overrides': overrides, 'median_growth': med, 'runs': runs})}")


if __name__ == "__main__":
    main()
