"""The maths harnesses: turn order, what each role sees, rewards, the observable stop, and the
reference code's defects (each a regression test)."""
from __future__ import annotations

import pytest

import envs
import roles
from roles.maths import REASONER_RIGHT, TOOL_RIGHT, ArithDemos
from fake_engine import FakeEngine, pooled, rollout_once

TASK = envs.make("math")
DEMOS = ArithDemos(TASK)


def mas(**kw):
    return roles.make_harness(TASK, "mas", **kw)


def single(**kw):
    return roles.make_harness(TASK, "single", **kw)


def problem(i=0, split="train"):
    return TASK.instance(split, i)


def right_program(p):
    return f"print({p.expression})"


def wrong_program(p):
    return f"print({p.naive_expression})"


def boxed(x):
    return f"\\boxed{{{x}}}"


def test_turn_order_and_what_each_sees():
    h, p = mas(), problem()
    assert h.role_names == ["tool", "reasoner"]
    s = h.reset(p)
    assert h.prompt(s, "tool") == p.statement + "\nprogram:"
    s = h.act_sync(s, "tool", right_program(p)).state
    assert h.prompt(s, "reasoner") == p.statement + "\nanswer:"  # turn 1: alone
    s = h.act_sync(s, "reasoner", boxed(5)).state
    assert h.prompt(s, "tool") == f"{p.statement}\nlast:\n{right_program(p)}\nreasoner: 5\nprogram:"
    s = h.act_sync(s, "tool", wrong_program(p)).state
    # turn 2: the tool's answer of turn 1, not the one it just printed
    assert h.prompt(s, "reasoner") == f"{p.statement}\nlast: 5\ntool: {p.answer}\nanswer:"


def test_rewards_and_the_stop_on_agreement():
    h, p = mas(), problem()
    s = h.reset(p)
    out = h.act_sync(s, "tool", right_program(p))
    assert out.local == TOOL_RIGHT and out.team == 0.0
    wrong = h.act_sync(out.state, "reasoner", boxed(int(p.answer) + 1))
    assert wrong.local == 0.0 and not wrong.state.done  # they disagree: go on
    agree = h.act_sync(out.state, "reasoner", boxed(p.answer))
    assert agree.local == REASONER_RIGHT and agree.team == 1.0 and agree.solved and agree.state.done
    # agreeing on a wrong answer stops the episode too (observable), and is not a success
    s = h.act_sync(h.reset(p), "tool", wrong_program(p)).state
    bad = h.act_sync(s, "reasoner", boxed(DEMOS.naive_answer(s.task_state)))
    assert bad.state.done and not bad.solved and bad.local == 0.0


def test_single_reasoner_runs_every_turn_and_sees_only_itself():
    h, p = single(max_turns=3), problem()
    s = h.reset(p)
    for turn in range(3):
        assert not s.done
        if turn:
            assert h.prompt(s, "reasoner") == f"{p.statement}\nlast: {p.answer}\nanswer:"
        s = h.act_sync(s, "reasoner", boxed(p.answer)).state  # right every turn: nothing stops it early
    assert s.done and s.turn == 3 and TASK.is_solved(s.task_state)


@pytest.mark.parametrize("text", ["", "42", "\\boxed{}", "\\boxed{unclosed", "x" * 5000])
def test_unparsable_answers_are_penalised_not_raised(text):
    out = mas().act_sync(mas().reset(problem()), "reasoner", text)
    assert not out.parse_ok and out.local == -0.5 and out.state.task_state.answers == (None,)


@pytest.mark.parametrize("text", ["print(", "def (", "\x00"])
def test_unparsable_programs_are_penalised(text):
    out = mas().act_sync(mas().reset(problem()), "tool", text)
    assert not out.parse_ok and out.local == -0.5 and out.state.task_state.tool_answers == (None,)


def test_a_failing_program_is_shown_as_no_answer():
    h, p = mas(), problem()
    s = h.act_sync(h.reset(p), "tool", "raise ValueError(" + repr(p.answer) + ")").state
    assert s.task_state.tool_answers == (None,)
    s = h.act_sync(s, "reasoner", boxed(1)).state
    s = h.act_sync(s, "tool", right_program(p)).state
    assert "tool: none" in h.prompt(s, "reasoner")


def _rollout(h, p, programs, answers, k):
    engine = FakeEngine(pooled({"tool": programs, "reasoner": answers},
                               lambda prompt: "reasoner" if prompt.endswith("answer:") else "tool"))
    return rollout_once(h, p, engine, k)


def test_the_reasoners_k_candidates_are_scored_on_their_own_copies():
    """The reference code scored the second role's K candidates on identical copies: here each
    reasoner candidate gets its own answer's reward."""
    p = problem()
    ep = _rollout(mas(max_turns=1), p, [right_program(p)], [boxed(p.answer), boxed(0), "junk"], k=3)
    reasoner = [s for s in ep.samples if s.role == "reasoner" and s.turn == 0]
    assert sorted(s.local for s in reasoner) == [-0.5, 0.0, REASONER_RIGHT]
    assert len({s.group_id for s in reasoner}) == 1
    assert ep.solved


def test_the_warm_starts_demonstrators():
    h, p = mas(), problem()
    s = h.reset(p)
    tool, reasoner = h.role("tool"), h.role("reasoner")
    assert tool.demo(s) == right_program(p) and tool.naive(s) == wrong_program(p)
    s = h.act_sync(s, "tool", wrong_program(p)).state
    assert reasoner.demo(s) == boxed(p.answer)
    assert reasoner.naive(s) == boxed(DEMOS.naive_answer(s.task_state))
    s = h.act_sync(s, "reasoner", boxed(7)).state
    assert tool.naive(s) == wrong_program(p)  # repeats its last program
    s = h.act_sync(s, "tool", right_program(p)).state
    assert reasoner.naive(s) == boxed(7)      # repeats its own answer, whatever the tool said


def test_unknown_harness_options_and_the_planning_ones_are_refused():
    for bad in ({"colour": "red"}, {"field": 10}):
        with pytest.raises(ValueError, match=rf"unknown maths harness option\(s\) \['{next(iter(bad))}'\]; "
                                             "allowed: max_turns, instructions, parse_penalty, tool"):
            mas(**bad)
    with pytest.raises(ValueError, match=r"harness.tool='program'; allowed: null \(the maths team has no choice of tool\)$"):
        mas(tool="program")
    assert mas(tool=None).role_names == ["tool", "reasoner"] and single(tool=None).role_names == ["reasoner"]
