"""The real benchmarks' board (roles/codebench.py): test blocks parse without raising on any
text, round-trip, and read into a problem's own types or give None; feedback never raises."""
from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from envs.code_data import CodeProblem
from roles.code import MAX_TESTS
from roles.codebench import SHOW, BenchBoard

FAST = settings(max_examples=300, deadline=None)
BOARD = BenchBoard(task=None)
CALL = CodeProblem("t/1", "test", "Add two numbers.", "call", "add", (((1, 2), 3),), (((2, 2), 4),))
STDIN = CodeProblem("t/2", "test", "Echo.", "stdin", None, (("a\n", "a\n"),), (("b\n", "b\n"),))

pieces = st.sampled_from(["input:", "output:", "input:\n", "output:\n", "\n", " ", "[1, 2]", "{", "}",
                          "\"", "3", "-", "```", "\u2028", "\x00", "NaN", "1e999"])
texty = st.one_of(st.text(), st.lists(st.one_of(pieces, st.text(max_size=6)), max_size=40).map("".join))
# a line of a test block: no line breaks of any kind, not blank, not starting like a block keyword
line = st.text(st.characters(blacklist_categories=["Cc", "Zl", "Zp", "Cs"]), min_size=1, max_size=12).filter(
    lambda s: s.strip() == s != "" and not s.startswith(("input:", "output:")))


@FAST
@given(texty)
def test_parse_tests_never_raises_and_keeps_at_most_max_tests(text):
    parsed = BOARD.parse_tests(text)
    assert parsed.ok == bool(parsed.action) and (parsed.ok or parsed.error)
    if parsed.ok:
        assert 1 <= len(parsed.action) <= MAX_TESTS
        for problem in (CALL, STDIN):
            typed = BOARD.typed(problem, parsed.action)
            assert typed is None or len(typed) == len(parsed.action)


@FAST
@given(st.lists(st.tuples(st.lists(st.one_of(line, st.just("")), min_size=1, max_size=3),
                          st.lists(line, min_size=1, max_size=2)), min_size=1, max_size=5))
def test_test_blocks_round_trip(cases):
    """An input keeps its lines, blank ones included, but for trailing line breaks; an output is stripped."""
    text = "\n".join("input:\n" + "\n".join(i) + "\noutput:\n" + "\n".join(o) for i, o in cases)
    parsed = BOARD.parse_tests(text)
    assert parsed.ok
    assert parsed.action == tuple(("\n".join(i).rstrip("\n") + "\n", "\n".join(o).strip() + "\n")
                                  for i, o in cases[:MAX_TESTS])


@FAST
@given(st.lists(st.tuples(st.lists(st.integers(-10**6, 10**6), max_size=3), st.integers()), min_size=1, max_size=3))
def test_call_tests_read_as_json_arguments_and_value(cases):
    text = "\n".join("input:\n" + "\n".join(json.dumps(a) for a in args) + "\noutput:\n" + json.dumps(out)
                     for args, out in cases)  # no arguments: an empty line
    parsed = BOARD.parse_tests(text)
    assert parsed.ok
    assert BOARD.typed(CALL, parsed.action) == tuple((tuple(a), o) for a, o in cases)


@FAST
@given(st.lists(st.tuples(texty, texty, st.one_of(st.none(), texty, st.integers(), st.lists(st.integers()))),
                min_size=1, max_size=3))
def test_feedback_never_raises_and_caps_what_it_shows(fails):
    text = BOARD.feedback(fails)
    assert text.startswith(f"{len(fails)} failed; first:")
    assert len(text) <= 3 * (SHOW + 4) + 60
