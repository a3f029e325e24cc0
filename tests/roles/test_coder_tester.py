"""The code harnesses: turn order, what each role sees, rewards, the observable stop, and the
reference code's defects (each a regression test)."""
from __future__ import annotations

import pytest

import envs
import roles
from envs.code import apply, program_text
from roles.code import VALID_AND_RIGHT, format_tests, parse_tests
from sandbox.attacks import ATTACKS
from fake_engine import FakeEngine, pooled, rollout_once

TASK = envs.make("code")


def mas(**kw):
    return roles.make_harness(TASK, "mas", **kw)


def single(**kw):
    return roles.make_harness(TASK, "single", **kw)


def problem(i=0, split="train"):
    return TASK.instance(split, i)


def wrong(p):
    return program_text(p.outer, p.inner)


def after_coder(h, p, program):
    return h.act_sync(h.reset(p), "coder", program)


def test_turn_order_and_what_the_tester_sees():
    h, p = mas(), problem()
    assert h.role_names == ["coder", "tester"]
    out = after_coder(h, p, wrong(p))
    prompt = h.prompt(out.state, "tester")
    assert p.statement in prompt and wrong(p) in prompt and prompt.endswith("tests:")


def test_tester_reward_valid_and_right_verdict():
    """The tester's local reward is not always zero (the reference code never loaded the reference
    solution): valid tests with the right verdict earn it; valid tests that let a wrong program
    pass earn nothing (no credit for validity alone); nor does a test the reference disagrees with."""
    h, p = mas(), problem()
    key, other = p.examples[p.key_example], p.examples[(p.key_example + 1) % 3]
    wrong_state = after_coder(h, p, wrong(p)).state
    right_state = after_coder(h, p, TASK.oracle(wrong_state.task_state)).state
    assert h.act_sync(wrong_state, "tester", format_tests([key])).local == VALID_AND_RIGHT
    assert h.act_sync(wrong_state, "tester", f"example {p.key_example + 1}").local == VALID_AND_RIGHT
    assert h.act_sync(right_state, "tester", format_tests([other])).local == VALID_AND_RIGHT
    assert h.act_sync(wrong_state, "tester", format_tests([other])).local == 0.0
    bad = (key[0], tuple(reversed(key[1])) if len(set(key[1])) > 1 else key[1] + (1,))
    assert h.act_sync(right_state, "tester", format_tests([bad])).local == 0.0  # invalid, though it fails


def test_coder_sees_the_mismatches_from_turn_two_in_the_team_only():
    h, p = mas(), problem()
    key = p.examples[p.key_example]
    s = h.act_sync(after_coder(h, p, wrong(p)).state, "tester", format_tests([key])).state
    assert not s.done and s.turn == 1
    got = " ".join(map(str, apply(p.outer, p.inner, list(key[0]))))  # what the wrong order computes
    line = f"tests: {format_tests([key])} got {got}"
    assert line in h.prompt(s, "coder") and wrong(p) in h.prompt(s, "coder"), h.prompt(s, "coder")
    hs = single()
    s1 = hs.act_sync(hs.reset(p), "coder", wrong(p)).state
    assert "tests:" not in hs.prompt(s1, "coder") and wrong(p) in hs.prompt(s1, "coder")


def test_team_stops_on_its_own_tests_not_on_the_hidden_ones():
    h, p = mas(), problem()
    other = p.examples[(p.key_example + 1) % 3]
    out = h.act_sync(after_coder(h, p, wrong(p)).state, "tester", format_tests([other]))
    assert out.state.done and not out.solved and out.team == 0.0  # observable pass, hidden fail
    right = after_coder(h, p, TASK.oracle(h.reset(p).task_state))
    assert right.solved and not right.state.done  # solved, but nobody has observed it yet


def test_single_agent_runs_every_turn_whatever_it_writes():
    h, p = single(max_turns=3), problem()
    s = h.reset(p)
    for _ in range(3):
        out = h.act_sync(s, "coder", TASK.oracle(s.task_state))
        s = out.state
    assert out.solved and s.done and s.turn == 3


@pytest.mark.parametrize("text", ["", "no program", "def g(x): return x", "def f(x) return", "(" * 10000,
                                  "```python\ndef f(x):\n    return x[\n```"])
def test_unparsable_programs_are_penalised_not_raised(text):
    h, p = mas(), problem()
    out = after_coder(h, p, text)
    assert not out.parse_ok and out.local == h.parse_penalty and "parse_error" in out.info


@pytest.mark.parametrize("text", ["", "3 1 ->", "a -> b", "1 2 -> 3\nnonsense"])
def test_unparsable_tests_are_penalised(text):
    h, p = mas(), problem()
    out = h.act_sync(after_coder(h, p, wrong(p)).state, "tester", text)
    assert not out.parse_ok and out.local == h.parse_penalty and not out.state.done


def test_parse_tests_reads_empty_lists_example_references_and_caps_the_count():
    assert parse_tests("- -> -\n1 10 -> 2\nexample 3").action == (((), ()), ((1, 10), (2,)), 3)
    h, p = mas(), problem()
    out = h.act_sync(after_coder(h, p, wrong(p)).state, "tester", "example 4")  # there are three
    assert out.parse_ok and out.local == 0.0 and not out.state.done
    assert len(parse_tests("\n".join(["1 -> 1"] * 9)).action) == 3


def _rollout(h, p, programs, tests, k):
    engine = FakeEngine(pooled({"coder": programs, "tester": tests},
                               lambda prompt: "tester" if prompt.endswith("tests:") else "coder"))
    return rollout_once(h, p, engine, k)


def test_the_testers_k_candidates_are_scored_on_their_own_copies():
    """The reference code scored the second role's K candidates after the branch selection had
    overwritten them, so they all got the same reward: here different tests get different rewards."""
    p = problem()
    key, other = p.examples[p.key_example], p.examples[(p.key_example + 1) % 3]
    ep = _rollout(mas(max_turns=1), p, [wrong(p)], [format_tests([key]), format_tests([other]), "junk"], k=3)
    tester = [s for s in ep.samples if s.role == "tester" and s.turn == 0]
    assert sorted(s.local for s in tester) == [-0.5, 0.0, VALID_AND_RIGHT]
    assert len({s.group_id for s in tester}) == 1


@pytest.mark.e2e  # the attack suite's programs in the sandbox
def test_a_rollout_with_attack_programs_among_the_candidates_completes():
    """Every attack of sandbox/attacks.py as a coder candidate: contained, scored zero, the episode
    goes on (fields the attacks aim at are filled with harmless values)."""
    p = problem()
    fields = {"canary": "/nonexistent", "outside": "/nonexistent", "port": 9, "trainer_pid": 0,
              "secret": "x", "comm": "marl-rollout-attack"}
    attacks = [f"def f(x):\n    pass\n{a.code.format(**fields)}" for a in ATTACKS]
    ep = _rollout(mas(max_turns=1), p, attacks + [TASK.oracle(TASK.initial_state(p))],
                  [format_tests([p.examples[p.key_example]])], k=len(attacks) + 1)
    coder = [s for s in ep.samples if s.role == "coder"]
    assert len(coder) == len(ATTACKS) + 1
    assert all(s.local <= 0.0 for s in coder[:-1]) and coder[-1].local == 1.0
    assert ep.solved  # the best candidate, the right program, is continued from


def test_unknown_harness_options_and_the_planning_ones_are_refused():
    for bad in ({"colour": "red"}, {"coords": True}):
        with pytest.raises(ValueError, match=rf"unknown code harness option\(s\) \['{next(iter(bad))}'\]; "
                                             "allowed: max_turns, instructions, parse_penalty, tool"):
            mas(**bad)
    with pytest.raises(ValueError, match=r"harness.tool='program'; allowed: null \(the code team has no choice of tool\)$"):
        single(tool="program")
    assert mas(tool=None).role_names == ["coder", "tester"]


def test_the_warm_starts_demonstrators():
    """The naive coder writes the statement's order, and the other order only after a failed test
    (never in the single harness, which shows no test); the naive tester trusts the program, so it
    passes right and wrong programs alike and is paid only for a right one; the oracle tester
    catches every wrong program."""
    h, n_right = mas(), 0
    for i in range(40):
        p = problem(i)
        a, b = p.ops
        s0 = h.reset(p)
        coder, tester = h.role("coder"), h.role("tester")
        first = coder.naive(s0)
        assert first == program_text(a, b)
        after = after_coder(h, p, first).state
        right = after.task_state.pass_ratio == 1.0
        n_right += right
        trusting = h.act_sync(after, "tester", tester.naive(after))
        assert trusting.state.task_state.tests_passed and trusting.local == VALID_AND_RIGHT * right
        caught = h.act_sync(after, "tester", tester.demo(after))
        assert caught.state.task_state.tests_passed == right and caught.local == VALID_AND_RIGHT
        if not right:
            assert coder.naive(caught.state) == program_text(b, a) == TASK.oracle(caught.state.task_state)
            assert coder.naive(trusting.state) == first  # no failed test: nothing to fix
        s1 = single().act_sync(single().reset(p), "coder", first).state
        assert single().role("coder").naive(s1) == first
    assert 10 < n_right < 30  # the statement's order is right about half the time
