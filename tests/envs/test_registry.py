"""Environment checks for every registered task and every harness registered for it.

A new task is covered by registering it (`envs.register`) and its harnesses
(`roles.register_team`); nothing here names a task. Requirements on a task beyond the
`envs.Task` protocol: instances expose `.key`, the canonical content string that `envs.split_of`
hashes, and `oracle` + `step` reach a solved state.

PettingZoo's `api_test` is deliberately not run: it compares each observation's numpy dtype with
the observation space's, and our observations are gymnasium `Text` (Python str), which has no
`.dtype`, so it fails on that one check for every text env (DESIGN.md, dependency facts). Its
other parts are covered here: `seed_test` and a full `agent_iter()` play loop.
"""
from __future__ import annotations

import math
import random
import warnings

import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import seed_test

import envs
import roles  # noqa: F401  (registers the harnesses)
from roles.base import make_harness, teams
from roles.env import SingleAgentEnv, TeamEnv

TASKS = envs.registered()
HARNESSES = [(t, h) for t, h in teams() if t in TASKS]
ONE_ROLE = [(t, h) for t, h in HARNESSES if len(make_harness(envs.make(t), h).roles) == 1]
N_ORACLE = 200
MAX_ORACLE_STEPS = 64


def ids(pairs):
    return [f"{t}-{h}" for t, h in pairs]


def harness(task_name: str, name: str, **kwargs):
    return make_harness(envs.make(task_name), name, **kwargs)


def content_key(instance) -> str:
    key = getattr(instance, "key", None)
    assert isinstance(key, str) and key, f"{type(instance).__name__} needs a .key content string"
    return key


def test_every_task_has_a_harness():
    assert TASKS, "no task registered"
    for t in TASKS:
        assert any(task == t for task, _ in HARNESSES), f"task {t!r} has no harness"


# --- task level ---------------------------------------------------------------------------

@pytest.mark.parametrize("task_name", TASKS)
def test_instances_are_deterministic(task_name):
    a, b = envs.make(task_name), envs.make(task_name)
    for split in envs.SPLITS:
        for i in range(30):
            x, y = a.instance(split, i), b.instance(split, i)
            assert x == y and content_key(x) == content_key(y)
            assert content_key(a.instance(split, i)) == content_key(x)


@pytest.mark.parametrize("task_name", TASKS)
def test_splits_are_disjoint_by_content(task_name):
    task = envs.make(task_name)
    n = {"train": 1000, "val": 200, "test": 200}
    keys = {}
    for split, k in n.items():
        keys[split] = {content_key(task.instance(split, i)) for i in range(k)}
        assert all(envs.split_of(key) == split for key in keys[split]), split
    assert not keys["train"] & keys["val"]
    assert not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]


@pytest.mark.parametrize("task_name", TASKS)
@pytest.mark.parametrize("split", envs.SPLITS)
def test_task_oracle_solves_first_instances(task_name, split):
    task = envs.make(task_name)
    for i in range(N_ORACLE):
        state = task.initial_state(task.instance(split, i))
        assert not task.is_solved(state), f"{split}:{i} is solved before any action"
        for _ in range(MAX_ORACLE_STEPS):
            before = state
            res = task.step(state, task.oracle(state))
            assert before == state  # step does not mutate its input
            assert math.isfinite(res.reward)
            assert res.reward == pytest.approx(sum(res.terms.values()))
            state = res.state
            if res.solved:
                break
        assert task.is_solved(state), f"oracle did not solve {split}:{i}"


# --- harness level ------------------------------------------------------------------------

@pytest.mark.parametrize(("task_name", "name"), HARNESSES, ids=ids(HARNESSES))
@pytest.mark.parametrize("split", envs.SPLITS)
def test_oracle_team_solves_first_instances(task_name, name, split):
    h = harness(task_name, name)
    for i in range(N_ORACLE):
        state = h.reset(h.task.instance(split, i))
        first = None  # the turn in which the task was first solved
        while not state.done:
            for role in h.role_names:
                out = h.act_sync(state, role, h.role(role).demo(state))
                assert out.parse_ok, f"demo of {role!r} does not parse: {split}:{i}"
                first = state.turn if first is None and out.solved else first
                state = out.state
                if state.done:
                    break
        assert h.task.is_solved(state.task_state), f"{name} oracle team failed {split}:{i}"
        assert first == 0, "the oracle team solves in its first turn"
        if h.stops_when_solved:
            assert state.turn == 1, "...and the episode ends there"


@pytest.mark.parametrize(("task_name", "name"), ONE_ROLE, ids=ids(ONE_ROLE))
def test_gymnasium_check_env(task_name, name):
    env = SingleAgentEnv(harness(task_name, name))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*spec.*")  # render-mode check needs gym.make
        check_env(env)


@pytest.mark.parametrize(("task_name", "name"), ONE_ROLE, ids=ids(ONE_ROLE))
def test_single_agent_env_oracle_and_determinism(task_name, name):
    env = SingleAgentEnv(harness(task_name, name))
    obs1, _ = env.reset(seed=7)
    obs2, _ = env.reset(seed=7)
    assert obs1 == obs2 and env.observation_space.contains(obs1)
    assert len({env.reset(seed=s)[0] for s in range(20)}) > 1, "the seed picks the instance"
    for i in range(20):
        env.reset(options={"split": "val", "index": i})
        assert env.state_ == env.harness.reset(env.harness.task.instance("val", i)), "options pick the instance"
        for _ in range(env.harness.max_turns):
            obs, reward, terminated, truncated, info = env.step(env.harness.role(env.role).demo(env.state_))
            assert math.isfinite(reward) and info["parse_ok"]
            if terminated or truncated:
                break
        assert terminated and not truncated


@pytest.mark.parametrize(("task_name", "name"), ONE_ROLE, ids=ids(ONE_ROLE))
def test_single_agent_env_truncates_after_max_turns(task_name, name):
    env = SingleAgentEnv(harness(task_name, name, max_turns=2))
    env.reset(seed=0)
    flags = [env.step("")[2:4] for _ in range(2)]  # unparsable: never solves
    assert flags == [(False, False), (False, True)]


@pytest.mark.parametrize(("task_name", "name"), HARNESSES, ids=ids(HARNESSES))
def test_pettingzoo_seed_test(task_name, name):
    seed_test(lambda: TeamEnv(harness(task_name, name)), num_cycles=10)


def play(env: TeamEnv, choose, *, seed=None, options=None) -> dict:
    """One full AEC episode through `agent_iter()`; returns what happened."""
    env.reset(seed=seed, options=options)
    n_roles, max_turns = len(env.possible_agents), env.harness.max_turns
    live_steps, order, last = 0, [], {}
    for agent in env.agent_iter(max_iter=4 * n_roles * max_turns):
        obs, reward, terminated, truncated, info = env.last()
        assert math.isfinite(reward)
        assert isinstance(obs, str) and env.observation_space(agent).contains(obs)
        last[agent] = (terminated, truncated)
        if terminated or truncated:
            env.step(None)
            continue
        order.append(agent)
        live_steps += 1
        assert live_steps <= n_roles * max_turns, "episode longer than max_turns"
        env.step(choose(env, agent, obs))
    assert env.agents == [], "agents did not all finish"
    assert set(last) == set(env.possible_agents)
    for agent, (terminated, truncated) in last.items():
        assert terminated != truncated, f"{agent} ended with terminated={terminated} truncated={truncated}"
    return {"order": order, "solved": env.harness.task.is_solved(env.state_.task_state),
            "terminated": all(t for t, _ in last.values()), "cumulative": dict(env._cumulative_rewards)}


@pytest.mark.parametrize(("task_name", "name"), HARNESSES, ids=ids(HARNESSES))
def test_aec_play_loop_with_oracle_actions(task_name, name):
    env = TeamEnv(harness(task_name, name))
    oracle = lambda env, agent, obs: env.harness.role(agent).demo(env.state_)
    for i in range(20):
        env.reset(options={"split": "test", "index": i})
        assert env.state_ == env.harness.reset(env.harness.task.instance("test", i)), "options pick the instance"
        got = play(env, oracle, options={"split": "test", "index": i})
        assert got["solved"] and got["terminated"]
        if env.harness.stops_when_solved:
            assert got["order"] == env.possible_agents  # every role once, in turn order, one turn
        else:  # stops on what the team observes: roles in turn order, up to max_turns
            assert got["order"] == (env.possible_agents * env.harness.max_turns)[:len(got["order"])]


@pytest.mark.parametrize(("task_name", "name"), HARNESSES, ids=ids(HARNESSES))
def test_aec_play_loop_with_random_text(task_name, name):
    env = TeamEnv(harness(task_name, name))
    rng = random.Random(0)

    def noisy(env, agent, obs):
        if rng.random() < 0.5:
            return env.action_space(agent).sample()
        return env.harness.role(agent).noise(env.state_, rng)

    for episode in range(30):
        got = play(env, noisy, seed=episode)
        n = len(env.possible_agents)
        assert got["order"] == (env.possible_agents * env.harness.max_turns)[:len(got["order"])]
        assert got["terminated"] == got["solved"]
        if not got["solved"] and env.harness.stops_when_solved:
            assert len(got["order"]) == n * env.harness.max_turns


@pytest.mark.parametrize(("task_name", "name"), HARNESSES, ids=ids(HARNESSES))
def test_team_env_is_deterministic_under_the_same_actions(task_name, name):
    def trace(seed):
        env = TeamEnv(harness(task_name, name))
        rng = random.Random(1)
        seen = []

        def choose(env, agent, obs):
            seen.append(obs)
            return env.harness.role(agent).noise(env.state_, rng)

        play(env, choose, seed=seed)
        seen.append(env._cumulative_rewards)
        return seen

    assert trace(3) == trace(3)
    assert trace(3)[0] != trace(4)[0] or trace(3)[0] != trace(5)[0]
