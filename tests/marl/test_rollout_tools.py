"""Tool work runs off the event loop: the K candidates of every problem in a step run their
programs at once in the tool pool (roles.base.tool_pool), on the real program tool."""
from __future__ import annotations

import asyncio
import random
import time

import envs
import roles
from marl.rollout import RolloutJob, RolloutSpec
from marl.routing import Routing
from roles.base import TOOL_WORKERS
from fake_engine import FakeEngine

SLEEP = 0.2
PROGRAM = f"```python\nimport time\nt = time.time()\ntime.sleep({SLEEP})\nprint(t, time.time())\n```"


def test_32_candidates_sleeping_programs_overlap():
    """32 candidates whose program sleeps 0.2 s: run one after another they would take 6.4 s; in
    the pool they overlap (measured from the programs' own clocks) and finish in a small multiple
    of 0.2 s."""
    h = roles.make_harness(envs.make("planpath"), "mas", max_turns=1, tool="program", tool_timeout_s=10.0)
    engine = FakeEngine(script=lambda prompt, n: PROGRAM)
    k = 32
    assert TOOL_WORKERS >= k

    async def go():
        return await engine.gather([RolloutJob(h, h.task.instance("train", 0), "train:0",
                                               Routing({"tool": "p", "plan": "p"}), RolloutSpec(k, 1.0, 1.0),
                                               random.Random(0))])

    t0 = time.perf_counter()
    (ep,) = asyncio.run(go())
    wall = time.perf_counter() - t0
    spans = [tuple(map(float, s.info["tool_output"].split())) for s in ep.samples if s.role == "tool"]
    assert len(spans) == k and all(b - a >= SLEEP for a, b in spans)
    # the most programs asleep at one moment (1 if they ran one after another); their starts are
    # spread by interpreter start-up (tens of ms each on 2 cores), so not all 32 at once
    most = max(sum(a <= t < b for a, b in spans) for t, _ in spans)
    assert most >= 8, (most, spans)
    assert wall < k * SLEEP / 2, wall  # 6.4 s if run one after another
