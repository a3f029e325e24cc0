"""Memory stability: resident memory of a training run at step 10 and at step 100.

    python benchmarks/memory.py [--steps 100] [hydra overrides]

Runs `marl.train +exp=planning` (the default settings, evaluation every 20 steps included) for
`--steps` steps and reads `system/peak_rss_mb` (peak so far) and `system/rss_mb` (current) that
every run logs. The growth from step 10 to the last step is the figure (goal: under 5%).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, table, train_metrics  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    args, overrides = ap.parse_known_args()
    rows = {r["step"]: r for r in train_metrics(overrides, args.steps) if "system/peak_rss_mb" in r}
    a, b = rows[10], rows[args.steps]
    out = {k: {"step_10": a[k], f"step_{args.steps}": b[k], "growth": b[k] / a[k] - 1}
           for k in ("system/peak_rss_mb", "system/rss_mb") if k in a}
    print(table([[k, v["step_10"], v[f"step_{args.steps}"], f"{100 * v['growth']:+.1f}%"] for k, v in out.items()],
                ["metric", "step 10", f"step {args.steps}", "growth"]))
    print(f"wrote {save('memory', {'steps': args.steps, 'overrides': overrides, 'results': out, 'curve': {s: r.get('system/rss_mb') for s, r in rows.items()}})}")


if __name__ == "__main__":
    main()
