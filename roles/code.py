"""The code harnesses (envs/code.py):

- `mas`: each turn the coder writes a program, then the unit tester, having seen it, writes test
  cases for the problem; the program runs on them (sandbox) and from the next turn the coder sees
  the mismatches (input, expected, got). The episode stops when the program passes the tester's
  tests (what the team can observe) or after max_turns; success is the hidden tests, which no role
  sees.
- `single`: the coder alone; from turn 2 it sees its previous program and no test outcome (the
  paper's baseline). Nothing observable ends its episode early.

Local rewards (each a constant below):
- coder: the pass ratio of its program on the training instance's hidden tests (the task reward);
- tester: VALID_AND_RIGHT if every test case it wrote agrees with the reference solution *and*
  its tests' verdict on the current program (all pass or not) is the hidden tests' verdict; else
  0. No credit for validity alone: a trivially valid test that any program passes (measured: the
  tiny tester converged on `2 2 2 -> 2 2 2`, which ends the episode on a false pass) must not pay.
  The reference solution is part of every problem, so this is never zero for want of one (a defect
  of the reference code).

The code family (`code_family`, conf/family/code.yaml) serves every code task; a task is a
`envs.base.CodeTask`. What differs per task is a board: how a problem reads as text, how a tester writes a test case
and how mismatches are shown, and the demonstrators the tiny model's warm start is made from
(`ListBoard` here for the tiny task; roles/codebench.py for the real benchmarks). The roles, turn
order and rewards are not copied. On the tiny task a test case is a line `<input> -> <expected>`
(lists of numbers, `-` for the empty list) or `example <n>`, the statement's n-th example
(1-based); at most MAX_TESTS are read. The tiny tester's oracle tests every example, one of which
(never the first) tells the two orders apart; its naive demonstrator tests the first example only,
which passes either order. The coder's naive demonstrator writes the statement's order and, after a
failed test, the other order. The warm team therefore mostly stops on the coder's first program (as
good as the single coder), and what RL can add is a tester that tests the example that tells the
orders apart: the team's edge is execution feedback, not a better reading of the statement. A
tester that misses that example lets a wrong program pass and end the episode on it (it then
earns nothing).
"""
from __future__ import annotations

import random
import re
from dataclasses import replace

from envs.base import CodeTask
from envs.code import OPS, apply, fmt, program_text
from roles.base import Family, Parsed, TeamState, never, no_tool, register_team
from roles.text import head, parse_program

VALID_AND_RIGHT = 1.0  # valid tests that pass the current program exactly when the hidden tests do
MAX_TESTS = 3
_LIST = r"(\d+(?: \d+)*|-)"
_TEST = re.compile(rf"^\s*{_LIST}\s*->\s*{_LIST}\s*$")
_EXAMPLE = re.compile(r"^\s*example (\d+)\s*$")


def _ints(s: str) -> list[int]:
    return [] if s == "-" else [int(t) for t in s.split()]


def parse_tests(text: str) -> Parsed:
    """Lines `<input> -> <expected>` or `example <n>` (kept as the int n)."""
    tests = []
    for line in text.strip().splitlines():
        m, ref = _TEST.match(line), _EXAMPLE.match(line)
        if ref:
            tests.append(int(ref.group(1)))
            continue
        if not m:
            return Parsed(False, error=f"not a test case: {line[:60]!r}")
        tests.append((tuple(_ints(m.group(1))), tuple(_ints(m.group(2)))))
    if not tests:
        return Parsed(False, error="no test case")
    return Parsed(True, tuple(tests[:MAX_TESTS]))


def format_tests(tests) -> str:
    return "\n".join(f"{fmt(list(i))} -> {fmt(list(o))}" for i, o in tests)


class ListBoard:
    """The tiny task's board (envs/code.py)."""

    function = "f"  # what a program must define (None: any program; its problem says how it is run)
    instructions = {"coder": "Write a Python function f(x) that maps each input list to its output list.",
                    "tester": "Write test cases `input -> output` that tell a wrong program from a right one."}

    def __init__(self, task: CodeTask):
        self.task = task

    def statement(self, problem) -> str:
        return problem.statement

    def parse_tests(self, text: str) -> Parsed:
        return parse_tests(text)

    def typed(self, problem, tests):
        """`example n` references resolved to the statement's example; None for one it lacks."""
        out = []
        for t in tests:
            if isinstance(t, int):
                if not 1 <= t <= len(problem.examples):
                    return None
                t = problem.examples[t - 1]
            out.append(t)
        return tuple(out)

    def feedback(self, fails) -> str:
        """(input, expected, got) triples as `in -> expected got out`, `;`-separated."""
        return " ; ".join(f"{fmt(list(i))} -> {fmt(list(o))} got {fmt(g) if isinstance(g, list) else 'error'}"
                          for i, o, g in fails)

    def demo_program(self, s) -> str:
        return self.task.oracle(s)

    def naive_program(self, s) -> str:
        """The operations in the order the statement lists them, or in the other order once a test
        has failed that one: a programmer who reads the feedback but not the examples (right half
        the time at first; after a failed test of a valid tester, right)."""
        a, b = s.problem.ops
        if s.feedback not in (None, "pass") and s.program == program_text(a, b):
            return program_text(b, a)
        return program_text(a, b)

    def noise_program(self, s, rng: random.Random) -> str:
        a, b = rng.sample(list(OPS), 2)
        return program_text(a, b)

    def demo_tests(self, s) -> str:
        """Every example of the statement: one of them tells the two orders apart, so the program
        passes them exactly when it passes the hidden tests."""
        return "\n".join(f"example {j + 1}" for j in range(len(s.problem.examples)))

    def naive_tests(self, s) -> str:
        """The statement's first example, the simple case: it never tells the orders apart, so
        every program of the two operations passes it, right or wrong."""
        return "example 1"

    def noise_tests(self, s, rng: random.Random) -> str:
        """A test case whose expected output is wrong (the input itself, or the other order's)."""
        p = s.problem
        i, _ = rng.choice(p.examples)
        wrong = apply(p.outer, p.inner, list(i)) if rng.random() < 0.5 else list(i)
        return format_tests([(i, tuple(wrong))])


class CoderRole:
    """Writes the program; its action advances the task (runs the hidden tests)."""

    blocking = True  # the hidden tests run in the sandbox

    def __init__(self, board, sees_tests: bool, instructions: bool):
        self.name, self.board, self.task = "coder", board, board.task
        self.sees_tests, self.instructions = sees_tests, instructions

    def prompt(self, state: TeamState) -> str:
        s = state.task_state
        lines = [head(self.instructions, self.board.instructions["coder"]) + self.board.statement(s.problem)]
        if s.history and s.history[-1] == "(unparsable)":
            lines.append("last: (unparsable)")
        elif s.program is not None:
            lines.append(f"last:\n{s.program}")
        if self.sees_tests and s.feedback is not None:
            lines.append(f"tests: {s.feedback}")
        return "\n".join(lines) + "\nprogram:"

    def parse(self, text: str) -> Parsed:
        return parse_program(text, self.board.function)

    def apply(self, state: TeamState, parsed: Parsed):
        s = state.task_state
        if not parsed.ok:
            s = replace(s, steps=s.steps + 1, history=s.history + ("(unparsable)",))
            return replace(state, task_state=s), 0.0, {}
        res = self.task.step(s, parsed.action)
        return replace(state, task_state=res.state), res.reward, {"terms": res.terms, "pass_ratio": res.state.pass_ratio}

    def demo(self, state: TeamState) -> str:
        return self.board.demo_program(state.task_state)

    def naive(self, state: TeamState) -> str:
        return self.board.naive_program(state.task_state)

    def noise(self, state: TeamState, rng: random.Random) -> str:
        return self.board.noise_program(state.task_state, rng)


class TesterRole:
    """Writes test cases for the problem, having seen the current program; the program runs on
    them and the mismatches are shown to the coder next turn."""

    blocking = True  # the current program runs on the tests in the sandbox

    def __init__(self, board, instructions: bool):
        self.name, self.board, self.task, self.instructions = "tester", board, board.task, instructions

    def prompt(self, state: TeamState) -> str:
        s = state.task_state
        intro = head(self.instructions, self.board.instructions["tester"])
        program = s.program if s.program is not None else "(none)"
        return f"{intro}{self.board.statement(s.problem)}\nprogram:\n{program}\ntests:"

    def parse(self, text: str) -> Parsed:
        return self.board.parse_tests(text)

    def apply(self, state: TeamState, parsed: Parsed):
        s = state.task_state
        if not parsed.ok:  # nothing ran: the coder sees no test outcome this turn
            return state, 0.0, {}
        tests = self.board.typed(s.problem, parsed.action)
        if tests is None:  # well-formed text, but not values of this problem's types
            return state, 0.0, {"valid": False}
        inputs = [i for i, _ in tests]
        ref = self.task.expected(s.problem, inputs)
        valid = ref is not None and all(r is not None and self.task.same(r, o) for r, (_, o) in zip(ref, tests))
        got = self.task.outputs(s.program, s.problem, inputs) if s.program is not None else [None] * len(tests)
        fails = [(i, o, g) for (i, o), g in zip(tests, got) if g is None or not self.task.same(g, o)]
        passed = s.program is not None and not fails
        feedback = "pass" if passed else self.board.feedback(fails)
        right = passed == (s.pass_ratio == 1.0)
        local = VALID_AND_RIGHT * (valid and right)
        new = replace(s, feedback=feedback, tests_passed=passed)
        return replace(state, task_state=new), local, {"valid": valid, "verdict_right": right, "feedback": feedback}

    def demo(self, state: TeamState) -> str:
        return self.board.demo_tests(state.task_state)

    def naive(self, state: TeamState) -> str:
        return self.board.naive_tests(state.task_state)

    def noise(self, state: TeamState, rng: random.Random) -> str:
        return self.board.noise_tests(state.task_state, rng)


def _tests_passed(state: TeamState) -> bool:
    return state.task_state.tests_passed


def code_family(board_cls) -> Family:
    """The code harnesses over the board `board_cls(task)`."""

    def single(task, instructions: bool, tool: str | None = None):
        del tool  # null only (the family's rule)
        return [CoderRole(board_cls(task), False, instructions)], never

    def mas(task, instructions: bool, tool: str | None = None):
        del tool  # null only (the family's rule)
        board = board_cls(task)
        return [CoderRole(board, True, instructions), TesterRole(board, instructions)], _tests_passed

    return Family("code", {"single": single, "mas": mas}, {"tool": no_tool("code")}, max_turns=5)


register_team("code", code_family(ListBoard))
