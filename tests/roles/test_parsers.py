"""Parsers never raise on arbitrary text; a failed parse is penalised and counted, not a crash."""
from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import envs
from envs.arith import MathState
import roles  # noqa: F401  (registers the harnesses)
from envs.grid import MOVES
from roles.base import Parsed, harness_family, make_harness, teams
from roles.text import format_moves, parse_cell, parse_moves

FAST = settings(max_examples=300, deadline=None)


def harness_variants():
    """Every registered harness with its defaults, plus planpath's program tool."""
    generated = envs.registered()  # the benchmark tasks need their files (tests/envs/test_code_data.py)
    out = [(t, h, {}) for t, h in teams() if t in generated]
    out += [(t, h, {"tool": "program"}) for t, h in teams()
            if h == "mas" and t in generated and harness_family(t).name == "planning"]
    return out


VARIANTS = harness_variants()
VARIANT_IDS = [f"{t}-{h}" + "".join(f"-{v}" for v in kw.values()) for t, h, kw in VARIANTS]
ROLES = [(f"{vid}-{r.name}", r) for vid, (t, h, kw) in zip(VARIANT_IDS, VARIANTS)
         for r in make_harness(envs.make(t), h, **kw).roles]

# arbitrary text, plus text shaped like answers (brackets, labels, numbers, fences, move words)
pieces = st.sampled_from(["[", "]", "\"", "'", ",", " ", "\n", ":", "plan:", "```python\n", "```",
                          "U", "d", "left", "RIGHT", "-", "7", "0", "\u2028", "\x1c", "\u0663"])
texty = st.one_of(st.text(), st.lists(st.one_of(pieces, st.text(max_size=5)), max_size=40).map("".join))


@FAST
@given(texty)
def test_parse_moves_never_raises(text):
    p = parse_moves(text)
    assert isinstance(p, Parsed)
    if p.ok:
        assert isinstance(p.action, tuple) and p.action and set(p.action) <= set(MOVES)
    else:
        assert p.action is None and p.error


@FAST
@given(texty)
def test_parse_cell_never_raises(text):
    p = parse_cell(text)
    assert isinstance(p, Parsed)
    if p.ok:
        r, c = p.action
        assert isinstance(r, int) and isinstance(c, int)
    else:
        assert p.error


@pytest.mark.parametrize("role", [r for _, r in ROLES], ids=[i for i, _ in ROLES])
@FAST
@given(text=texty)
def test_every_role_parse_never_raises(role, text):
    p = role.parse(text)
    assert isinstance(p, Parsed)
    assert p.ok or p.error


words = st.sampled_from(["U", "D", "L", "R", "u", "d", "l", "r", "up", "Down", "LEFT", "right"])
seps = st.sampled_from([" ", ", ", ",", "  ", "\t", "' '", "\", \""])


@FAST
@given(st.lists(words, min_size=1, max_size=30), seps, st.booleans())
def test_parse_moves_round_trips_move_lists(items, sep, bracket):
    text = sep.join(items)
    if bracket:
        text = f"I think the answer is\n[{text}]"
    expected = tuple(w[0].upper() for w in items)
    assert parse_moves(text) == Parsed(True, expected)


@pytest.mark.parametrize(("text", "moves"), [
    ("R R D", ("R", "R", "D")),
    ('["U", "L"]', ("U", "L")),
    ("plan: up, left", ("U", "L")),
    ("Plan: U,D", ("U", "D")),
    ("thinking...\nfirst [R] then\n['D', 'D']", ("D", "D")),  # the last bracketed list
    ("some reasoning\n\nR D\n\n", ("R", "D")),  # else the last non-empty line
    ("1R 2R 3D", ("R", "R", "D")),  # numbered (harness.numbered): indices dropped
    ("[1U, 2l]", ("U", "L")),
])
def test_parse_moves_examples(text, moves):
    assert parse_moves(text) == Parsed(True, moves)


@pytest.mark.parametrize("text", ["hello", "R R north", "[U, X]"])
def test_parse_moves_failure_names_allowed_moves(text):
    p = parse_moves(text)
    assert not p.ok and "allowed U D L R" in p.error


@pytest.mark.parametrize("text", ["", "   \n\t", "[]", "plan:", '[" ", ","]'])
def test_parse_moves_empty_fails(text):
    p = parse_moves(text)
    assert not p.ok and p.error == "no moves found"


def test_parse_moves_limit():
    assert parse_moves("R " * 5, max_moves=5).ok
    p = parse_moves("R " * 6, max_moves=5)
    assert not p.ok and "limit 5" in p.error


@pytest.mark.parametrize(("text", "expected"), [
    ("2 3", Parsed(True, (2, 3))),
    ("the goal is at\nrow 4, col 0", Parsed(True, (4, 0))),
    ("1 2 3", None), ("7", None), ("", None), ("99999 1", None),
    ("1 " + "9" * 5000, None),  # int() refuses > 4300 digits: must fail, not raise
    ("0" * 5000 + "1 2", None),
])
def test_parse_cell_examples(text, expected):
    p = parse_cell(text)
    if expected is None:
        assert not p.ok and p.error
    else:
        assert p == expected


# --- a failed parse through Harness.act --------------------------------------------------

@pytest.mark.parametrize(("task_name", "name", "kwargs"), VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("text", ["hello", "", "```python\nprint(1)  # never closed"])
def test_failed_parse_is_penalised_and_counted(task_name, name, kwargs, text):
    h = make_harness(envs.make(task_name), name, parse_penalty=-0.37, **kwargs)
    state = h.reset(h.task.instance("train", 3))
    for role in h.role_names:
        before = state
        out = h.act_sync(state, role, text)
        assert not out.parse_ok
        assert out.local == -0.37 and out.team == 0.0 and not out.solved
        assert out.info["parse_error"]
        assert state == before  # the input state is untouched
        if isinstance(state.task_state, MathState):  # maths: a failed turn is recorded as no answer
            assert out.state.task_state.answers + out.state.task_state.tool_answers in ((None,), (None, None))
        else:  # the task did not move: nothing but the attempt counter and its history line changed
            assert replace(out.state.task_state, steps=0, history=()) == replace(state.task_state, steps=0, history=())
        state = out.state
    if isinstance(state.task_state, MathState):
        assert "last: none" in h.prompt(state, "reasoner") and state.turn == 1
        return
    # the acting role's (plan agent's, coder's) failed attempt is counted as a step and shown in its next prompt
    actor = "coder" if task_name == "code" else "plan"
    assert state.task_state.steps == 1 and state.task_state.history == ("(unparsable)",)
    assert "(unparsable)" in h.prompt(state, actor)
    assert state.turn == 1


@given(st.lists(st.sampled_from("UDLR"), min_size=1, max_size=30), st.booleans())
def test_format_then_parse_is_identity(moves, numbered):
    assert parse_moves(format_moves(moves, numbered)) == Parsed(True, tuple(moves))
