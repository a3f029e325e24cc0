"""The prompt budget (`PolicyClients.max_prompt_tokens`): a prompt over it never reaches a generate
client; its episode ends there, failed, the overflow counted in the step's `train/` metrics and
the evaluation summary, and the step's grouping and advantages go on without that turn."""
from __future__ import annotations

import asyncio
import random

import pytest
import torch

import roles
from marl.advantage import group_advantages
from marl.algos import ATGRPO, TrajectoryGRPO
from marl.engine.local import prompt_budget
from marl.episodes import summarize
from marl.metrics import rollout_metrics
from marl.rollout import RolloutJob, RolloutSpec
from marl.routing import Routing
from marl.types import PromptOverflow
from fake_engine import FakeEngine, good
from test_local_engine import engine_for

K = 4


def chars(prompt: str) -> int:
    return len(prompt)


def sent_lengths(engine: FakeEngine) -> list[int]:
    """Records the length of every prompt the fake client is asked to generate from."""
    sent: list[int] = []
    client, generate = engine._client, engine._client.generate

    async def recording(prompt_ids, temperature, request_id=None, prompt=None):
        sent.append(len(prompt_ids))
        return await generate(prompt_ids, temperature, request_id, prompt)
    client.generate = recording
    return sent


def recording(sent: list[int], generate_batch):
    """`Runner.generate_batch` (bound, or unbound with the runner first) that records the length
    of every prompt of every decoding call in `sent`."""
    def call(*args, **kw):
        prompts = args[0] if isinstance(args[0], list) else args[1]
        sent.extend(map(len, prompts))
        return generate_batch(*args, **kw)
    return call


def episode(h, engine, k=K, problem=0, algo=ATGRPO()):
    jobs = algo.jobs(h, h.task.instance("train", problem), f"train:{problem}", Routing({r: "p" for r in h.role_names}),
                     RolloutSpec(k, 1.0, 1.0), random.Random(0))
    return asyncio.run(engine.gather(jobs))


def first_prompts(h) -> tuple[str, str]:
    """The tool's and the planner's prompts of turn 0 when the tool answers as the oracle."""
    s0 = h.reset(h.task.instance("train", 0))
    tool_prompt = h.prompt(s0, "tool")
    s1 = asyncio.run(h.act(s0, "tool", good(tool_prompt))).state
    return tool_prompt, h.prompt(s1, "plan")


def test_an_over_budget_prompt_ends_its_episode_failed_and_is_never_generated_from(task):
    h = roles.make_harness(task, "mas")
    tool_prompt, plan_prompt = first_prompts(h)
    assert len(plan_prompt) > len(tool_prompt)  # the planner's prompt shows the tool's answer
    oracle = lambda prompt, n: good(prompt)  # noqa: E731
    [free] = episode(h, FakeEngine(script=oracle, prompt_tokens=chars))
    assert free.solved and free.overflow is None  # without a budget the oracle solves it in turn 0

    budget = len(tool_prompt)  # the tool's prompt fits, the planner's does not
    engine = FakeEngine(script=oracle, prompt_tokens=chars, max_prompt=budget)
    sent = sent_lengths(engine)
    [ep] = episode(h, engine)
    assert sent == [len(tool_prompt)] * K and max(sent) <= budget  # the planner's prompt never reached generate
    assert ep.overflow == PromptOverflow(turn=0, role="plan", policy="p", prompt_tokens=len(plan_prompt), budget=budget)
    assert not ep.solved and ep.turns == 0
    # the tool's group is kept whole; the planner's turn has no response, so no samples and no group
    assert [(s.role, s.turn) for s in ep.samples] == [("tool", 0)] * K
    ATGRPO().check(ep.samples, K)
    adv, m = group_advantages(torch.tensor([s.reward for s in ep.samples]), [s.group_id for s in ep.samples], "at_grpo")
    assert adv.shape == (K,) and m["adv/n_groups"] == 1.0

    metrics = rollout_metrics(ep.samples, [ep, free], h.role_names)
    assert metrics["train/prompt_overflow"] == 1.0
    assert (metrics["role/plan/prompt_overflow"], metrics["role/tool/prompt_overflow"]) == (1.0, 0.0)
    assert metrics["train/success"] == 0.5
    summary = summarize([ep, free])
    assert summary["prompt_overflow"] == 1 and summary["success"] == 0.5


@pytest.mark.parametrize("algo", [ATGRPO(), TrajectoryGRPO()], ids=lambda a: a.name)
def test_a_step_whose_every_first_prompt_overflows_completes_with_no_samples(task, algo):
    """A prompt over the budget at the very first turn: no samples at all, for either algorithm
    (trajectory GRPO's K episodes of one problem share that prompt, so all K end on it)."""
    h = roles.make_harness(task, "mas")
    engine = FakeEngine(prompt_tokens=chars, max_prompt=5)
    sent = sent_lengths(engine)
    episodes = [e for p in range(3) for e in episode(h, engine, problem=p, algo=algo)]
    assert sent == [] and all(e.overflow.role == "tool" and e.overflow.turn == 0 and not e.samples for e in episodes)
    samples = algo.regroup(episodes)
    assert samples == [] and algo.check(samples, K)["adv/n_groups"] == 0.0
    adv, _ = group_advantages(torch.tensor([]), [], algo.estimator)
    assert adv.shape == (0,)
    assert rollout_metrics(samples, episodes, h.role_names)["train/prompt_overflow"] == len(episodes)


def test_trajectory_grpo_keeps_the_return_an_episode_had_when_it_overflowed(task):
    """An episode ended by an over-budget prompt after some turns keeps its samples, rewarded
    with the return it had reached; the K episodes still make one group."""
    h = roles.make_harness(task, "mas")
    tool_prompt, _ = first_prompts(h)
    engine = FakeEngine(prompt_tokens=chars, max_prompt=len(tool_prompt), seed=3)
    episodes = episode(h, engine, algo=TrajectoryGRPO())
    assert all(e.overflow is not None and e.overflow.role == "plan" for e in episodes)
    samples = TrajectoryGRPO().regroup(episodes)
    TrajectoryGRPO().check(samples, K)
    assert [s.reward for s in samples] == [e.return_ for e in episodes]  # one tool sample each


def test_the_local_engine_budget_is_the_models_context(model_dir):
    engine = engine_for(model_dir, "per_role", max_new_tokens=6)
    assert engine.max_prompt_tokens("tool") == engine.max_prompt_tokens("plan") == 256  # tiny_model's context
    with pytest.raises(ValueError, match="no policy 'shared'"):
        engine.max_prompt_tokens("shared")
    with pytest.raises(ValueError, match=r"max_new_tokens=256 leaves no room .* allowed: model.max_new_tokens < 256"):
        prompt_budget(model_dir, 256)


def test_local_rollouts_end_on_an_over_budget_prompt_while_the_others_go_on(model_dir, task):
    """One engine=local step over 5x5 and 7x7 boards, the budget between their tool prompts: the
    7x7 problems end on their first prompt, the 5x5 ones are generated from as before, and no
    decoding call holds a prompt over the budget."""
    import envs
    small = roles.make_harness(task, "mas", max_turns=1)
    large = roles.make_harness(envs.make("planpath", size=7), "mas", max_turns=1)
    engine = engine_for(model_dir, "shared")
    routing = Routing.default("shared", ["tool", "plan"], small.role_names)

    def tool_len(h, i):
        return len(engine.encode("shared", h.prompt(h.reset(h.task.instance("train", i)), "tool")))
    n = 3
    engine.prompt_budget = max(tool_len(small, i) for i in range(n))
    assert min(tool_len(large, i) for i in range(n)) > engine.prompt_budget
    sent: list[int] = []
    engine.runners[0].generate_batch = recording(sent, engine.runners[0].generate_batch)
    spec = RolloutSpec(K, 1.0, 1.0)
    jobs = [RolloutJob(h, h.task.instance("train", i), f"{name}:{i}", routing, spec, random.Random(i))
            for name, h in (("small", small), ("large", large)) for i in range(n)]
    episodes = asyncio.run(engine.gather(jobs))
    assert sent and max(sent) <= engine.prompt_budget
    for e in episodes[n:]:  # the 7x7 boards
        assert e.overflow.role == "tool" and e.overflow.prompt_tokens > engine.prompt_budget
        assert not e.solved and e.samples == []
    for e in episodes[:n]:  # the 5x5 boards: the tool's group whole; the planner's, unless its prompt is over too
        assert [s.role for s in e.samples][:K] == ["tool"] * K
        assert (len(e.samples) == K) == (e.overflow is not None and e.overflow.role == "plan")
    samples = ATGRPO().regroup(episodes)
    ATGRPO().check(samples, K)
    overflowed = sum(e.overflow is not None for e in episodes)
    assert rollout_metrics(samples, episodes, small.role_names)["train/prompt_overflow"] == overflowed >= n


@pytest.mark.e2e  # trains the small planning run
def test_a_training_run_with_over_budget_prompts_completes_and_counts_them(tmp_path, monkeypatch):
    """Planning prompts are about 45 (tool) and 68 (planner) tokens at turn 0 and grow by about 14 a
    turn: a budget of 75 ends every episode that reaches the planner's turn 1."""
    import json

    from marl import train
    from marl.engine.local import LocalEngine
    from marl.engine.local.decode import Runner
    from test_train_smoke import cfg_for, rows

    budget, sent = 75, []
    monkeypatch.setattr(LocalEngine, "max_prompt_tokens", lambda self, policy_id: budget)
    monkeypatch.setattr(Runner, "generate_batch", recording(sent, Runner.generate_batch))
    run_dir = tmp_path / "run"
    train.run(cfg_for(tmp_path), run_dir)
    assert sent and max(sent) <= budget
    steps = [r for r in rows(run_dir) if "train/prompt_overflow" in r]
    assert [r["step"] for r in steps] == [1, 2] and sum(r["train/prompt_overflow"] for r in steps) > 0
    assert all(r["train/prompt_overflow"] == r["role/tool/prompt_overflow"] + r["role/plan/prompt_overflow"]
               for r in steps)
    results = json.loads((run_dir / "eval.json").read_text())
    assert all(results[h][split]["prompt_overflow"] >= 0 for h in ("mas", "single") for split in ("val", "test"))
    assert sum(results[h][split]["prompt_overflow"] for h in ("mas", "single") for split in ("val", "test")) > 0
