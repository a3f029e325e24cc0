"""Evaluation episodes of a harness on a split (greedy or sampled), and their summary."""
from __future__ import annotations

import random
from collections import defaultdict

from marl.engine import RolloutEngine
from marl.rollout import RolloutJob, RolloutSpec
from marl.routing import Routing
from marl.types import Episode


async def play(harness, split: str, n: int, engine: RolloutEngine, routing: Routing, temperature: float = 0.0,
               alpha: float = 1.0, seed: int = 0) -> list[Episode]:
    """One episode per instance 0..n-1 of `split`, all problems rolled out concurrently."""
    spec = RolloutSpec(k=1, temperature=temperature, alpha=alpha)
    return await engine.gather([
        RolloutJob(harness, harness.task.instance(split, i), f"{split}:{i}", routing, spec,
                   random.Random(f"{seed}/{split}/{i}")) for i in range(n)])


def summarize(episodes: list[Episode]) -> dict[str, float]:
    """success, mean turns, parse-failure rate, episodes ended on an over-budget prompt (marl.rollout),
    mean reward per role, over the episodes."""
    n = max(len(episodes), 1)
    role_r: dict[str, list[float]] = defaultdict(list)
    actions = fails = 0
    for ep in episodes:
        for s in ep.samples:
            role_r[s.role].append(s.reward)
            actions += 1
            fails += not s.parse_ok
    out = {"success": sum(e.solved for e in episodes) / n, "n": len(episodes),
           "mean_turns": sum(e.turns for e in episodes) / n,
           "parse_fail_rate": fails / max(actions, 1),
           "prompt_overflow": sum(e.overflow is not None for e in episodes)}  # episodes ended on an over-budget prompt
    for role, rs in sorted(role_r.items()):
        out[f"role/{role}/reward"] = sum(rs) / len(rs)
    return out
