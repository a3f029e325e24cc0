"""Greedy (or sampled) evaluation of policies in a harness on a split."""
from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from marl.rollout import rollout
from marl.types import Episode


def run_episodes(harness, split: str, n: int, clients, role_policy, encode, temperature: float = 0.0,
                 alpha: float = 1.0, seed: int = 0) -> list[Episode]:
    """One episode per instance 0..n-1 of `split`, all problems rolled out concurrently."""
    async def go():
        jobs = [rollout(harness, harness.task.instance(split, i), f"{split}:{i}", clients, role_policy,
                        encode, k=1, temperature=temperature, alpha=alpha,
                        rng=random.Random(f"{seed}/{split}/{i}")) for i in range(n)]
        return await asyncio.gather(*jobs)
    return asyncio.run(go())


def summarize(episodes: list[Episode]) -> dict[str, float]:
    """success, mean turns, parse-failure rate, mean reward per role, over the episodes."""
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
           "parse_fail_rate": fails / max(actions, 1)}
    for role, rs in sorted(role_r.items()):
        out[f"role/{role}/reward"] = sum(rs) / len(rs)
    return out
