"""Regression tests for the reference implementation's AT-GRPO defects (DESIGN.md), run through
`marl.rollout.rollout` over the real Plan-Path `mas` harness with a scripted async client, plus
property tests of the grouping invariants and the trajectory-GRPO regrouping."""
from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import envs
import roles
from marl.advantage import group_advantages
from marl.grouping import at_grpo_key, check_groups, regroup_by_problem, trajectory_key
from marl.rollout import RolloutJob, RolloutSpec, choose
from marl.routing import Routing
from marl.types import Sample
from fake_engine import FakeEngine, bad, good

ALPHA = 1.0


def harness(max_turns: int = 4, **kw):
    return roles.make_harness(envs.make("planpath"), "mas", max_turns=max_turns, **kw)


ROUTING = Routing({"tool": "p", "plan": "p"})


def run(h, indices, k, engine: FakeEngine, seed=0, select="best", episode=0):
    async def all_():
        return await engine.gather([
            RolloutJob(h, h.task.instance("train", i), f"train:{i}", ROUTING, RolloutSpec(k, 1.0, ALPHA, select),
                       random.Random(seed * 1000 + i), episode=episode)
            for i in indices])
    return asyncio.run(all_())


def groups_in_order(samples: list[Sample]) -> list[list[Sample]]:
    """Groups in the order the rollout recorded them; each group's members must be contiguous."""
    out: list[list[Sample]] = []
    for s in samples:
        if out and out[-1][0].group_id == s.group_id:
            out[-1].append(s)
        else:
            assert all(g[0].group_id != s.group_id for g in out), f"group {s.group_id} is split"
            out.append([s])
    return out


def replay(h, instance, episode, codec) -> None:
    """Re-apply every candidate to the state its prompt must have come from: the state reached
    by the chosen candidates of all earlier groups. Checks prompt, prompt ids and each reward."""
    state = h.reset(instance)
    order = []
    for members in groups_in_order(episode.samples):
        role, turn = members[0].role, members[0].turn
        order.append((turn, h.role_names.index(role)))
        assert not state.done
        assert turn == state.turn
        prompt = h.prompt(state, role)
        for m in members:
            assert m.prompt == prompt, (m.turn, m.role)
            assert m.prompt_ids == codec.encode(prompt)
            out = h.act_sync(state, role, m.response)  # the state the prompt was rendered from
            assert m.team == (1.0 if out.solved else 0.0) == out.team
            assert m.local == out.local and m.parse_ok == out.parse_ok
            assert m.reward == pytest.approx(out.local + ALPHA * out.team)
        chosen = [m for m in members if m.chosen]
        assert len(chosen) == 1
        state = h.act_sync(state, role, chosen[0].response).state
    assert state.done
    assert order == sorted(order) and len(set(order)) == len(order)  # turn order, each role once
    assert episode.solved == h.task.is_solved(state.task_state)
    assert episode.turns == state.turn
    assert episode.return_ == pytest.approx(sum(s.reward for s in episode.samples if s.chosen))


# --- defect 1: the second role of a turn is scored on its own branch ------------------------

def test_second_role_rewards_differ_across_branches():
    """Plan agent candidates of one turn: oracle moves, an unparsable answer, and a wrong move.
    Each is scored from its own copy, so their rewards (and advantages) differ. The reference
    code scored after branch selection, giving the second role K identical rewards."""

    def script(prompt, n):
        if prompt.endswith("goal:"):
            return ["0 0", good(prompt)][n % 2]  # the tool is right for half the candidates
        return [good(prompt), "no idea", bad(prompt, random.Random(n))][n % 3]

    h = harness(max_turns=2)
    k = 3
    episodes = run(h, range(6), k, FakeEngine(script=script))
    samples = [s for ep in episodes for s in ep.samples]
    plan_groups = [g for g in groups_in_order(samples) if g[0].role == "plan"]
    assert plan_groups
    for g in plan_groups:
        rewards = [m.reward for m in g]
        assert len(set(rewards)) > 1, rewards
        assert g[0].team == 1.0 and g[0].reward == max(rewards)  # the oracle's answer solves it
        assert g[1].team == 0.0 and g[1].local == h.parse_penalty and not g[1].parse_ok
        assert [m for m in g if m.chosen][0].team == 1.0  # a solving answer is continued
    assert all(ep.solved and ep.turns == 1 for ep in episodes)
    adv, m = group_advantages(torch.tensor([s.reward for s in samples]), [s.group_id for s in samples],
                              "at_grpo")
    plan = torch.tensor([s.role == "plan" for s in samples])
    assert (adv[plan] != 0).any()
    for g in plan_groups:
        idx = [samples.index(x) for x in g]
        assert adv[idx[0]] > 0 > adv[idx[1]]


def test_first_role_rewards_also_differ():
    script = lambda p, n: (good(p) if n % 2 == 0 else "no idea") if p.endswith("goal:") else good(p)  # noqa: E731
    h = harness()
    episodes = run(h, range(4), 4, FakeEngine(script=script))
    for ep in episodes:
        tool = [s for s in ep.samples if s.role == "tool" and s.turn == 0]
        assert [s.local for s in tool] == [1.0, h.parse_penalty, 1.0, h.parse_penalty]
        assert [s.reward for s in tool] == [s.local for s in tool]  # the tool alone never solves


# --- defect 2: candidates are applied to the state their prompt came from -----------------

@pytest.mark.parametrize("seed, coords, positions", [(0, False, False), (1, False, False), (2, True, False),
                                                     (3, True, False), (4, False, True), (5, False, True)])
def test_every_candidate_applied_to_its_prompt_state(seed, coords, positions):
    h = harness(max_turns=4, coords=coords, positions=positions)
    idx = range(seed * 10, seed * 10 + 5)
    engine = FakeEngine(seed=seed, p_good=0.05)
    episodes = run(h, idx, 2, engine, seed=seed)
    for i, ep in zip(idx, episodes):
        replay(h, h.task.instance("train", i), ep, engine.codec)
    # the check must reach later turns, where the reference code went wrong
    assert max(s.turn for ep in episodes for s in ep.samples) >= 2


def test_team_reward_from_the_stepped_copy_only():
    """Only the candidate whose own action solves the task gets team 1, and from then on the
    episode is over: the team reward is read from the state each candidate produced."""

    def script(prompt, n):
        if prompt.endswith("goal:"):
            return good(prompt)
        turn = prompt.count("last:")  # 0 at turn 0; the history line appears from turn 1
        if turn == 0:
            return "no idea"  # nobody solves turn 0
        return ["nope", good(prompt), "no idea"][n % 3]

    h = harness(max_turns=3)
    engine = FakeEngine(script=script)
    episodes = run(h, range(5), 3, engine)
    for i, ep in enumerate(episodes):
        replay(h, h.task.instance("train", i), ep, engine.codec)
        plan = [s for s in ep.samples if s.role == "plan"]
        assert [s.team for s in plan if s.turn == 0] == [0.0, 0.0, 0.0]
        t1 = [s for s in plan if s.turn == 1]
        assert [s.team for s in t1] == [0.0, 1.0, 0.0]
        assert [s.chosen for s in t1] == [False, True, False]
        assert ep.solved and ep.turns == 2
        assert all(s.team == 0.0 for s in ep.samples if s.role == "tool")


# --- defect 3: group keys never merge problems ---------------------------------------------

def test_concurrent_problems_keep_separate_groups():
    k, n = 4, 8
    h = harness()
    engine = FakeEngine(seed=3, p_good=0.4)
    episodes = run(h, range(n), k, engine)
    samples = [s for ep in episodes for s in ep.samples]
    stats = check_groups(samples, k)
    by_group = defaultdict(set)
    for s in samples:
        by_group[s.group_id].add(s.problem_id)
        assert s.group_id == at_grpo_key(s.problem_id, s.turn, s.role)
    assert all(len(p) == 1 for p in by_group.values())
    expected = {(s.problem_id, s.turn, s.role) for s in samples}
    assert stats["adv/n_groups"] == len(expected) == len(by_group) and stats["adv/group_size"] == k
    assert {s.problem_id for s in samples} == {f"train:{i}" for i in range(n)}
    for i, ep in enumerate(episodes):
        assert ep.problem_id == f"train:{i}" and {s.problem_id for s in ep.samples} == {ep.problem_id}
        replay(h, h.task.instance("train", i), ep, engine.codec)


def _two_problem_samples(k=2):
    episodes = run(harness(max_turns=1), [0, 1], k, FakeEngine(seed=1, p_good=0.5))
    return [s for ep in episodes for s in ep.samples]


def test_check_groups_rejects_merged_problems():
    samples = _two_problem_samples()
    check_groups(samples, 2)
    a = [s for s in samples if s.problem_id == "train:0" and s.role == "plan"]
    b = [s for s in samples if s.problem_id == "train:1" and s.role == "plan"]
    merged = [replace(s, group_id=a[0].group_id) if s in b else s for s in samples]  # 2K members, two problems
    with pytest.raises(AssertionError, match="mixes problems"):
        check_groups(merged, 2)


def test_reference_index_arithmetic_keys_are_caught():
    """The reference keyed groups by (problem index) // K: with K = 2 problems 0 and 1 merge."""
    samples = _two_problem_samples()
    samples = [replace(s, group_id=f"{int(s.problem_id.split(':')[1]) // 2}|t{s.turn}|{s.role}") for s in samples]
    with pytest.raises(AssertionError):
        check_groups(samples, 2)


def test_check_groups_rejects_wrong_size_and_mixed_prompts():
    samples = _two_problem_samples(k=3)
    check_groups(samples, 3)
    with pytest.raises(AssertionError, match="members"):
        check_groups(samples, 2)
    with pytest.raises(AssertionError, match="members"):
        check_groups(samples[1:], 3)
    same = [s for s in samples if s.problem_id == "train:0"]
    tool, plan = [s for s in same if s.role == "tool"], [s for s in same if s.role == "plan"]
    other = [replace(tool[0], prompt=tool[0].prompt + " ")] + tool[1:]  # one member saw another prompt
    with pytest.raises(AssertionError, match="mixes"):
        check_groups(other, 3)
    check_groups(tool, 3)
    mixed = [replace(s, group_id="train:0|t0|tool") for s in tool[:2] + plan[:1]]
    with pytest.raises(AssertionError, match="mixes"):
        check_groups(mixed, 3)


def test_key_fields_cannot_collide():
    assert at_grpo_key("train:1", 0, "plan") != at_grpo_key("train:1", 1, "plan")
    assert at_grpo_key("train:1", 0, "plan") != at_grpo_key("train:10", 0, "plan")
    with pytest.raises(ValueError):
        at_grpo_key("a|t0", 0, "plan")
    with pytest.raises(ValueError):
        at_grpo_key("a", 0, "pl|an")


# --- property tests over random scripted rollouts -------------------------------------------

@settings(max_examples=25, deadline=None)
@given(k=st.integers(2, 5), p_good=st.floats(0.0, 1.0), max_turns=st.integers(1, 4),
       n_problems=st.integers(1, 3), seed=st.integers(0, 10_000), first=st.integers(0, 500))
def test_grouping_invariants_property(k, p_good, max_turns, n_problems, seed, first):
    h = harness(max_turns)
    idx = range(first, first + n_problems)
    engine = FakeEngine(seed=seed, p_good=p_good)
    episodes = run(h, idx, k, engine, seed=seed)
    samples = [s for ep in episodes for s in ep.samples]
    check_groups(samples, k)
    groups = defaultdict(list)
    for s in samples:
        groups[s.group_id].append(s)
    for gid, members in groups.items():
        assert len(members) == k
        assert len({(m.problem_id, m.turn, m.role) for m in members}) == 1
        assert len({m.prompt for m in members}) == 1
        assert sorted(m.candidate for m in members) == list(range(k))
        chosen = [m for m in members if m.chosen]
        assert len(chosen) == 1
        assert chosen[0].reward == max(m.reward for m in members)
        assert 0 <= members[0].turn < max_turns
    for i, ep in zip(idx, episodes):
        replay(h, h.task.instance("train", i), ep, engine.codec)
        # one group per role per turn played; the episode stops at the solving action
        assert len(ep.samples) % k == 0
        assert ep.turns <= max_turns
        last = [s for s in ep.samples if s.chosen][-1]
        assert (last.team == 1.0) == ep.solved


@settings(max_examples=25, deadline=None)
@given(rewards=st.lists(st.sampled_from([-0.5, 0.0, 0.25, 1.0, 1.5]), min_size=1, max_size=6),
       seed=st.integers(0, 1000))
def test_choose_best_breaks_ties_among_the_best(rewards, seed):
    picks = {choose(rewards, random.Random(seed + j)) for j in range(30)}
    best = {i for i, r in enumerate(rewards) if r == max(rewards)}
    assert picks <= best
    if len(best) > 1:
        assert len(picks) > 1  # ties are broken by the seed, not always the first


def test_choose_random_and_unknown():
    rng = random.Random(0)
    assert {choose([0.0, 1.0, 0.5], rng, "random") for _ in range(50)} == {0, 1, 2}
    with pytest.raises(ValueError, match="best, random"):
        choose([0.0], rng, "worst")


def test_k_must_be_positive():
    with pytest.raises(ValueError, match="k must be"):
        run(harness(), [0], 0, FakeEngine())


# --- trajectory GRPO ---------------------------------------------------------------------

def test_regroup_by_problem_uses_episode_returns():
    h = harness()
    k, problems = 4, [3, 4, 5]
    engine = FakeEngine(seed=9, p_good=0.35)

    async def all_():
        jobs = [RolloutJob(h, h.task.instance("train", i), f"train:{i}", ROUTING, RolloutSpec(1, 1.0, ALPHA),
                           random.Random(100 * i + e), episode=e)
                for i in problems for e in range(k)]
        return await engine.gather(jobs)

    episodes = asyncio.run(all_())
    returns = {(ep.problem_id, ep.samples[0].episode): ep.return_ for ep in episodes}
    assert len(returns) == len(problems) * k
    assert len(set(returns.values())) > 1, "episodes of different quality should differ"
    rolled = [s for ep in episodes for s in ep.samples]
    before = [(s.group_id, s.reward) for s in rolled]
    samples = regroup_by_problem(rolled, returns)
    assert [(s.group_id, s.reward) for s in rolled] == before, "the rollout's samples are not rewritten"
    assert any(s.reward != r.reward for s, r in zip(samples, rolled))
    ep_return = {(ep.problem_id, ep.samples[0].episode): ep.return_ for ep in episodes}
    for s, r in zip(samples, rolled):
        assert s.group_id == trajectory_key(s.problem_id) == s.problem_id
        assert s.reward == ep_return[(s.problem_id, s.episode)]
        assert s.chosen and (s.response, s.turn, s.role) == (r.response, r.turn, r.role)  # K = 1: all on the trajectory
    for ep in episodes:
        assert ep.return_ == pytest.approx(sum(o.local + ALPHA * o.team for o in [
            h.act_sync(st_, s.role, s.response) for st_, s in _states(h, ep)]))
    stats = check_groups(samples, k, per="grpo")
    assert stats == {"adv/n_groups": len(problems), "adv/group_size": len(samples) / len(problems)}
    with pytest.raises(AssertionError, match="episodes"):
        check_groups(samples, k + 1, per="grpo")
    with pytest.raises(ValueError, match="allowed: at_grpo, grpo"):
        check_groups(samples, k, per="trajectory")
    # every sample of an episode gets the same (episode-level) advantage under verl's grpo
    adv, _ = group_advantages(torch.tensor([s.reward for s in samples]), [s.group_id for s in samples], "grpo")
    by_ep = defaultdict(set)
    for s, a in zip(samples, adv.tolist()):
        by_ep[(s.problem_id, s.episode)].add(a)
    assert all(len(v) == 1 for v in by_ep.values())


def _states(h, ep):
    """(state before, sample) along a K = 1 episode."""
    state = h.reset(h.task.instance("train", int(ep.problem_id.split(":")[1])))
    out = []
    for s in ep.samples:
        out.append((state, s))
        state = h.act_sync(state, s.role, s.response).state
    return out


# --- the algorithms as strategies (marl.algos) ----------------------------------------------

def test_each_algorithm_makes_its_jobs_groups_and_names_its_estimator():
    """at_grpo: one K-candidate tree per problem, grouped per (problem, turn, role); grpo: K
    one-candidate episodes, each seeded from the problem's rng in episode order, grouped by problem."""
    from marl import advantage, algos

    h, k = harness(max_turns=2), 3
    engine = FakeEngine(seed=4, p_good=0.5)
    spec = RolloutSpec(k, 1.0, ALPHA)
    for name, per_problem in (("at_grpo", 1), ("grpo", k)):
        algo = algos.get(name)
        assert algo.name == name and algo.estimator in advantage.ESTIMATORS
        rng = random.Random(5)
        jobs = algo.jobs(h, h.task.instance("train", 0), "train:0", ROUTING, spec, rng)
        assert len(jobs) == per_problem
        if name == "grpo":
            seeds = random.Random(5)
            assert [j.episode for j in jobs] == list(range(k)) and all(j.spec.k == 1 for j in jobs)
            assert [j.rng.random() for j in jobs] == [random.Random(seeds.random()).random() for _ in range(k)]
        else:
            assert jobs[0].rng is rng and jobs[0].spec == spec
        jobs = algo.jobs(h, h.task.instance("train", 0), "train:0", ROUTING, spec, random.Random(5))
        samples = algo.regroup(asyncio.run(engine.gather(jobs)))
        stats = algo.check(samples, k)
        assert stats["adv/n_groups"] == len({s.group_id for s in samples})
        assert (name == "grpo") == all(s.group_id == "train:0" for s in samples)
    with pytest.raises(ValueError, match="unknown algo 'ppo'; allowed: at_grpo, grpo"):
        algos.get("ppo")
