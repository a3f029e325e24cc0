"""Scaling: step time and peak memory as K, the number of turns and the number of roles grow.

    python benchmarks/scaling.py [--steps 7] [hydra overrides]

Each setting runs `marl.train` for `--steps` steps (evaluation off) in a fresh subprocess, so
its peak resident memory is its own; the first step is discarded as warm-up and the median of
the rest is reported. All settings load the same warm start (the default tiny model) through
`model.path`. Samples per step are reported too: the tree rollout stops a problem when it is
solved, so more turns allowed does not always mean more samples.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, save, saved_default, table, train_metrics  # noqa: E402

QUIET = ["eval.warm_start=false", "eval.n_val=1", "eval.n_test=1", "train.eval_every=100000",
         "train.checkpoint_every=100000"]
SETTINGS = {  # name -> overrides; the default is the team (2 roles), K = 4, 4 turns
    "K=2": ["algo.k=2"], "K=4": ["algo.k=4"], "K=8": ["algo.k=8"],
    "turns=1": ["harness.max_turns=1"], "turns=2": ["harness.max_turns=2"], "turns=4": ["harness.max_turns=4"],
    "roles=1 (single)": ["harness=single"], "roles=2 (team)": ["harness=mas"],
}


def one(overrides: list[str], steps: int) -> dict:
    rows = [r for r in train_metrics(overrides, steps) if "timing/step" in r][1:]
    return {"step_s": median([r["timing/step"] for r in rows]),
            "rollout_s": median([r["timing/rollout"] for r in rows]),
            "update_s": median([r["timing/update"] for r in rows]),
            "samples": median([r["train/samples"] for r in rows]),
            "peak_rss_mb": max(r["system/peak_rss_mb"] for r in rows)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--child", nargs="*")  # internal: run one setting and print its JSON
    args, overrides = ap.parse_known_args()
    if args.child is not None:
        print(json.dumps(one(args.child, args.steps)))
        return
    path, _tmp = saved_default(overrides)
    results, rows = {}, []
    for name, extra in SETTINGS.items():
        cmd = [sys.executable, __file__, "--steps", str(args.steps), "--child", *QUIET, path, *overrides, *extra]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[name] = r = json.loads(out.strip().splitlines()[-1])
        rows.append([name, r["samples"], r["step_s"], r["rollout_s"], r["update_s"],
                     1000 * r["step_s"] / r["samples"], r["peak_rss_mb"]])
        print(name, r, file=sys.stderr)
    print(f"median of steps 2..{args.steps} of one run per setting (team, K=4, 4 turns unless named)")
    print(table(rows, ["setting", "samples/step", "step s", "rollout s", "update s", "ms/sample", "peak RSS MB"]))
    print(f"wrote {save('scaling', {'steps': args.steps, 'overrides': overrides, 'results': results})}")


if __name__ == "__main__":
    main()
