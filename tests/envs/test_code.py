"""The tiny code task: instances, hidden tests, and the fast path for the task's own compositions."""
from __future__ import annotations

import json

import pytest

import envs
from envs.code import OPS, TEMPLATES, _run, apply, program_text
from sandbox import run_calls


@pytest.fixture(scope="module")
def task():
    return envs.make("code")


def test_each_composition_runs_in_the_sandbox_as_the_fast_path_says():
    """The task's own compositions are evaluated by its functions, not executed: the same values."""
    inputs = [[3, 1, 2, 5], [4, 7, 1], [2, 2, 9, 0, 5], [8, 3, 6], [0, 0, 1]]
    for text, (inner, outer) in TEMPLATES.items():
        ran = run_calls(text, "f", [(x,) for x in inputs])
        assert [r.out for r in ran] == [json.dumps(apply(inner, outer, x)) for x in inputs], text
        assert _run(text, tuple(map(tuple, inputs))) == tuple(r.out for r in ran)


def test_exactly_one_example_tells_the_order_apart_and_the_hidden_tests_do(task):
    for i in range(100):
        p = task.instance("train", i)
        apart = [apply(p.outer, p.inner, list(x)) != list(y) for x, y in p.examples]
        assert sum(apart) == 1 and apart.index(True) == p.key_example
        assert sum(apply(p.outer, p.inner, list(x)) != p.reference(list(x)) for x in p.hidden) >= 3
        assert set(p.ops) == {p.inner, p.outer}
        assert not {tuple(x) for x in p.hidden} & {tuple(x) for x, _ in p.examples}, "a hidden input is shown"


def test_key_examples_are_second_or_third_and_statements_list_either_order(task):
    ps = [task.instance("train", i) for i in range(200)]
    assert {p.key_example for p in ps} == {1, 2}
    assert 0.3 < sum(p.ops == (p.inner, p.outer) for p in ps) / len(ps) < 0.7


def test_the_hidden_tests_judge_not_the_examples(task):
    """A program that passes every shown example (a lookup of them) is not solved: success is the
    hidden tests (the reference code judged CodeContests and LiveCodeBench on public examples)."""
    p = task.instance("test", 0)
    table = {tuple(x): list(y) for x, y in p.examples}
    lookup = f"def f(x):\n    return {table!r}.get(tuple(x), [])"
    assert [r.out for r in run_calls(lookup, "f", [(list(x),) for x, _ in p.examples])] == \
        [json.dumps(list(y)) for _, y in p.examples]
    res = task.step(task.initial_state(p), lookup)
    assert not res.solved and res.state.pass_ratio < 1.0


def test_reward_is_the_hidden_pass_ratio(task):
    p = task.instance("train", 3)
    s = task.initial_state(p)
    right, wrong = task.step(s, task.oracle(s)), task.step(s, program_text(p.outer, p.inner))
    assert right.solved and right.reward == 1.0 and right.terms == {"pass": 1.0}
    assert not wrong.solved and 0.0 <= wrong.reward <= 0.5
    assert task.step(s, "def f(x):\n    while True: pass").reward == 0.0  # a hang is a failed test


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="allowed: sort"):
        envs.make("code", ops=["sort", "shuffle"])
    with pytest.raises(ValueError, match="min_len"):
        envs.make("code", min_len=6, max_len=3)
    assert set(OPS) >= {"sort", "reverse"}


def test_every_composition_fits_the_tiny_models_generation_budget():
    """A program cut off at max_new_tokens is a parse failure the model cannot avoid (measured: a
    budget of 40 cut a third of the compositions). Counted with the tiny tokenizer's split."""
    import re
    from pathlib import Path
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "conf"), version_base=None):
        budget = compose("config", overrides=["+exp=code"]).model.max_new_tokens
    longest = max(len(re.findall(r"[A-Za-z]+|\d|[^A-Za-z\d]", t)) for t in TEMPLATES)
    assert longest + 1 <= budget, (longest, budget)  # + EOS
