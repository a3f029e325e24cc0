"""A pooled scripted policy for harness tests: each role's n-th request gets the n-th text of its pool
(cycling); prompts travel as their text, and `role_of(prompt)` tells whose request it is.
Named apart from tests/marl/scripted.py: pytest puts both folders on sys.path, so a shared name
would shadow one with the other."""
from __future__ import annotations

import asyncio
import random

from marl.rollout import RolloutJob, RolloutSpec
from marl.routing import Routing
from marl.types import Completion


class PooledEngine:
    def __init__(self, pools: dict[str, list[str]], role_of):
        self.prompts, self.pools, self.role_of = [], pools, role_of
        self.n = {r: 0 for r in pools}

    def encode(self, pid, prompt):
        self.prompts.append(prompt)
        return [len(self.prompts) - 1]

    def client(self, pid):
        return self

    async def generate(self, ids, temperature, request_id=None):
        role = self.role_of(self.prompts[ids[0]])
        pool = self.pools[role]
        text = pool[self.n[role] % len(pool)]
        self.n[role] += 1
        await asyncio.sleep(0)
        return Completion([1], [0.0], text)


def scripted_rollout(h, problem, engine: PooledEngine, k: int):
    """One AT-GRPO rollout tree (K candidates per turn and role) of `h` on `problem`."""
    job = RolloutJob(h, problem, "train:0", Routing({r: "p" for r in h.role_names}), RolloutSpec(k, 1.0, 1.0),
                     random.Random(0))
    return asyncio.run(job.run(engine))
