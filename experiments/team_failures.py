"""Where a team fails on a move-list task (Plan-Path, Sokoban): greedy episodes on validation, the
first turn of each counted by (tool answer right?, solution short (<= 5 moves) or long, what the
plan agent wrote: the tool's moves, the naive demonstrator's, or something else; compared as
parsed actions, so a copy of a fixed-width field's filler still counts as a copy), and solved
problems by solution length.

    python -m experiments.team_failures <run dir> [best|latest|warm] [n=200]
"""
from __future__ import annotations

import asyncio
import collections
import sys
from pathlib import Path

from marl import checkpoint
from marl.build import build_run
from marl.config import load_run_settings
from marl.episodes import play
from marl.io import set_threads
from roles import make_harness


def main(run: Path, which: str = "best", n: int = 200):
    """Print and return (first-turn counts, solved counts), keyed as printed."""
    built = build_run(load_run_settings(run))
    task = built.task
    if which != "warm":
        checkpoint.load(checkpoint.resolve(run, which), built.engine, weights_only=True)
    h = make_harness(task, "mas", **built.h_kw)
    board = h.role("plan").board
    eps = asyncio.run(play(h, "val", n, built.engine, built.routing(h.role_names)))
    first_turn, solved = collections.Counter(), collections.Counter()
    for i, ep in enumerate(eps):
        s0 = task.initial_state(task.instance("val", i))
        long = "long" if len(task.oracle(s0)) > 5 else "short"
        tool, plan = [s for s in ep.samples if s.turn == 0][:2]
        out = board.parse_action(plan.response)
        tool_moves = board.parse_action(plan.prompt.split("tool: ")[-1].split("\n")[0])
        naive = tuple(board.naive_action(s0))
        kind = ("copy" if out.ok and tool_moves.ok and out.action == tool_moves.action
                else "naive" if out.ok and out.action == naive else "other")
        first_turn[(f"tool {'right' if tool.local > 0 else 'wrong'}", long, kind)] += 1
        solved[(long, ep.solved)] += 1
    print(f"{run} ({which}), {n} validation problems; turn 0:")
    for key in sorted(first_turn):
        print(f"  {' / '.join(key):<28} {first_turn[key]}")
    for long in ("short", "long"):
        print(f"solved, {long} paths: {solved[(long, True)]} of {solved[(long, True)] + solved[(long, False)]}")
    return first_turn, solved


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    set_threads(0)
    main(Path(args[0]), args[1] if len(args) > 1 else "best", int(args[2]) if len(args) > 2 else 200)
