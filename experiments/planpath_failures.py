"""Where a Plan-Path team fails: greedy episodes on validation, the first turn of each counted by
(tool answer right?, path short (<= 5 moves) or long, what the plan agent wrote: an exact copy of
the tool's moves, the naive walk, or something else), and solved problems by path length.

    python -m experiments.planpath_failures <run dir> [best|latest|warm] [n=200]
"""
from __future__ import annotations

import collections
import os
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from marl import checkpoint
from marl.evaluation import run_episodes
from marl.policy import build_run
from roles import make_harness
from roles.text import format_moves, manhattan_walk


def main(run: Path, which: str = "best", n: int = 200) -> None:
    rc = OmegaConf.load(run / "config.yaml")
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    task, h_kw, pset = build_run(rc)
    if which != "warm":
        path = run / "checkpoints" / "best" if which == "best" else checkpoint.latest(run)
        checkpoint.load(path, pset.policies, weights_only_models=True)
    h = make_harness(task, "mas", **h_kw)
    eps = run_episodes(h, "val", n, pset.clients(), pset.role_policy(h.role_names), pset.encoders())
    first_turn, solved = collections.Counter(), collections.Counter()
    for i, ep in enumerate(eps):
        s0 = task.initial_state(task.instance("val", i))
        long = "long" if len(task.oracle(s0)) > 5 else "short"
        tool, plan = [s for s in ep.samples if s.turn == 0][:2]
        out = plan.response.strip()
        tool_moves = plan.prompt.split("tool: ")[-1].split("\n")[0].strip()
        naive = format_moves(manhattan_walk(s0.pos, s0.grid.goal), h_kw.get("numbered", False))
        kind = "copy" if out == tool_moves else "naive" if out == naive else "other"
        first_turn[(f"tool {'right' if tool.local > 0 else 'wrong'}", long, kind)] += 1
        solved[(long, ep.solved)] += 1
    print(f"{run} ({which}), {n} validation problems; turn 0:")
    for key in sorted(first_turn):
        print(f"  {' / '.join(key):<28} {first_turn[key]}")
    for long in ("short", "long"):
        print(f"solved, {long} paths: {solved[(long, True)]} of {solved[(long, True)] + solved[(long, False)]}")


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    main(Path(args[0]), args[1] if len(args) > 1 else "best", int(args[2]) if len(args) > 2 else 200)
