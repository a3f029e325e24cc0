"""The local engine never hangs (issue 27): `engine.max_batch=0` is the engine's default, a
negative one is refused when the engine is built, and an exception anywhere in the batching path
fails every waiting request with it, so a step's rollouts, and the run, end with it.

Every wait is bounded (`asyncio.wait_for`), so a regression fails here instead of hanging the suite."""
from __future__ import annotations

import asyncio
import random
import re
import pytest

import roles
from marl.engine import EngineSpec, OptimSpec, make_engine
from marl.engine.local.batching import Batcher
from marl.engine.local.decode import Runner
DEFAULT_MAX_BATCH = 512
from marl.rollout import RolloutJob, RolloutSpec
from marl.routing import Routing

OPTIM = OptimSpec(lr=1e-2, weight_decay=0.0, schedule="constant", warmup_steps=0, total_steps=10)
TIMEOUT_S = 60  # a few decoding calls of a tiny model take well under a second


def spec_for(model_dir, max_batch: int) -> EngineSpec:
    return EngineSpec(name="local", kind="shared", policy_ids=("shared",), model_path=model_dir, dtype="float32",
                      device="cpu", max_new_tokens=4, max_batch=max_batch, optim=OPTIM, reference=False, seed=0)


def rollouts(engine, task, n=3, k=2):
    """A step's rollouts (n problems, K candidates, two turns of the team) through engine.gather."""
    h = roles.make_harness(task, "mas", max_turns=2)
    routing = Routing.default("shared", ["shared"], h.role_names)
    jobs = [RolloutJob(h, task.instance("train", i), f"train:{i}", routing, RolloutSpec(k, 1.0, 1.0),
                       random.Random(i)) for i in range(n)]

    async def go():
        return await asyncio.wait_for(engine.gather(jobs), TIMEOUT_S)
    return asyncio.run(go())


def callers(engine, n=5):
    """n concurrent generate calls of the shared policy: what each caller got (result or exception)."""
    client = engine.client("shared")
    prompts = [engine.encode("shared", f"go {i}") for i in range(n)]

    async def go():
        return await asyncio.wait_for(asyncio.gather(*[client.generate(p, 1.0) for p in prompts],
                                                     return_exceptions=True), TIMEOUT_S)
    return asyncio.run(go())


def test_max_batch_0_is_the_engines_default_and_generates(model_dir, task):
    """Before: every request waited for ever (`range(0, n, 0)` raised in an event-loop callback)."""
    engine = make_engine(spec_for(model_dir, 0))
    assert [r.max_batch for r in engine.runners] == [DEFAULT_MAX_BATCH]
    episodes = rollouts(engine, task)
    assert len(episodes) == 3 and all(ep.samples for ep in episodes)


@pytest.mark.parametrize("max_batch", [-1, 1.5, True])
def test_a_max_batch_that_is_not_a_count_is_refused_before_the_engine_loads(model_dir, max_batch):
    """Before: engine.max_batch=-1 served no request (an empty range of chunks) and hung without a word."""
    with pytest.raises(ValueError, match=r"engine.max_batch must be an integer >= 1, or 0 for the engine's default"):
        spec_for(model_dir, max_batch)


@pytest.mark.parametrize("max_batch", [0, -1])
def test_a_runner_refuses_fewer_than_one_row_per_call(max_batch):
    with pytest.raises(ValueError, match=rf"max_batch .* must be an integer >= 1, got {max_batch}; "
                                         rf"engine.max_batch=0 asks for the engine's default, {DEFAULT_MAX_BATCH}"):
        Runner(None, None, max_new_tokens=4, max_batch=max_batch)


class Boom(RuntimeError):
    pass


def break_decoding(engine, monkeypatch):
    def generate_batch(*a, **kw):
        raise Boom("decoding failed")
    monkeypatch.setattr(engine.runners[0], "generate_batch", generate_batch)


def break_serving(engine, monkeypatch):
    def serve(batch):
        raise Boom("serving failed")
    monkeypatch.setattr(Batcher, "_serve", staticmethod(serve))


def break_chunking(engine, monkeypatch):  # a runner whose limit went bad after it was built
    monkeypatch.setattr(engine.runners[0], "max_batch", 0)


def skip_every_call(engine, monkeypatch):  # a runner with no chunk to serve answers no one
    monkeypatch.setattr(engine.runners[0], "max_batch", -1)


@pytest.mark.parametrize("inject, error, match", [
    (break_decoding, Boom, "decoding failed"),
    (break_serving, Boom, "serving failed"),
    (break_chunking, ValueError, "range"),
    (skip_every_call, RuntimeError, r"served 0 of \d+ generate requests and left \d+ unanswered"),
])
def test_an_exception_in_the_batching_path_fails_every_waiting_request(model_dir, task, monkeypatch, inject, error,
                                                                       match):
    """Before (all but the first): the exception was only logged by the event loop, or nothing
    answered at all, and every caller waited for ever."""
    engine = make_engine(spec_for(model_dir, 512))
    inject(engine, monkeypatch)
    outs = callers(engine)
    assert len(outs) == 5 and all(isinstance(e, error) for e in outs), outs
    assert len({id(e) for e in outs}) == 1 and re.search(match, str(outs[0]))  # the one failure, in every caller
    with pytest.raises(error, match=match):  # a step's rollouts end with it, and so does the run
        rollouts(engine, task)
