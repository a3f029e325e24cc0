"""The maths harnesses (envs/arith.py, envs/mathbench.py):

- `mas`: each turn the tool agent writes a Python program that prints the answer (it runs in the
  sandbox), then the reasoner answers in `\\boxed{}`. In turn 1 each works alone; from turn 2 each
  sees the other's answer of the previous turn (the tool also its own last program, the reasoner
  its own last answer). The episode stops when the reasoner's answer equals the tool's of the same
  turn (what the team can observe) or after max_turns; success is the reasoner's latest answer
  against the gold answer, which no role sees.
- `single`: the reasoner alone; from turn 2 it sees its own previous answer. Nothing observable
  ends its episode early.

Local rewards (each a constant below):
- tool: TOOL_RIGHT if the value its program printed is the gold answer (a program that fails has
  printed no answer: its traceback is never read as one);
- reasoner: REASONER_RIGHT if its boxed answer is the gold answer. This term rewards no verdict:
  adopting or refusing the tool's answer pays only through being right.
Both are checked by envs/answers.check (math-verify, gold first). Team: the reasoner's latest
answer is right (roles/base.py); reward `local + alpha * team`.

The tiny warm start's demonstrators (marl/tiny.py): the oracle tool prints the story's expression,
the naive tool its misreading (a sign or a bracket wrong: envs/arith.py) and, from turn 2, repeats
its last program; the oracle reasoner writes the gold answer, the naive one the misreading's value
and, from turn 2, repeats its own last answer: a reasoner that does not listen. So the warm team is
about as good as the reasoner alone, and what RL can add is a reasoner that adopts the tool's exact
answer: the team's edge is the program's arithmetic, not a better reading of the story.
"""
from __future__ import annotations

import random
from dataclasses import replace

from envs.answers import check, last_boxed
from envs.arith import tool_step
from roles.base import Harness, Parsed, TeamState, ignore_planning_view, register_harness
from roles.code import parse_program

TOOL_RIGHT = 1.0      # the tool's printed value is the gold answer
REASONER_RIGHT = 1.0  # the reasoner's boxed answer is the gold answer
INSTRUCTIONS = {"tool": "Write a Python program that prints the answer to the problem.",
                "reasoner": "Solve the problem. Put the final answer in \\boxed{}."}


def _shown(answer: str | None) -> str:
    return "none" if answer is None else answer


def parse_answer(text: str) -> Parsed:
    """The contents of the last `\\boxed{}`."""
    a = last_boxed(text)
    if not a:
        return Parsed(False, error="no \\boxed{} answer")
    return Parsed(True, a)


class ToolRole:
    """Writes a program that prints the answer; it runs in the sandbox."""

    blocking = True

    def __init__(self, task, instructions: bool):
        self.name, self.task, self.instructions = "tool", task, instructions

    def prompt(self, state: TeamState) -> str:
        s = state.task_state
        lines = [(INSTRUCTIONS["tool"] + "\n" if self.instructions else "") + self.task.statement(s.problem)]
        if s.programs:
            lines.append(f"last:\n{s.programs[-1] if s.programs[-1] is not None else '(unparsable)'}")
        if s.answers:
            lines.append(f"reasoner: {_shown(s.answers[-1])}")
        return "\n".join(lines) + "\nprogram:"

    def parse(self, text: str) -> Parsed:
        return parse_program(text, None, prints=True)

    def apply(self, state: TeamState, parsed: Parsed):
        s = tool_step(state.task_state, parsed.action if parsed.ok else None)
        printed = s.tool_answers[-1]
        right = check(self.task.gold(s.problem), printed).correct
        return replace(state, task_state=s), TOOL_RIGHT * right, {"printed": printed, "tool_right": right}

    def demo(self, state: TeamState) -> str:
        return self.task.oracle_program(state.task_state)

    def naive(self, state: TeamState) -> str:
        s = state.task_state
        if s.programs and s.programs[-1] is not None:
            return s.programs[-1]
        return self.task.naive_program(s)

    def noise(self, state: TeamState, rng: random.Random) -> str:
        return self.task.noise_program(state.task_state, rng)


class ReasonerRole:
    """Answers in `\\boxed{}`; its answer is the team's."""

    blocking = True  # answers are checked by math-verify in a worker process

    def __init__(self, task, sees_tool: bool, instructions: bool):
        self.name, self.task = "reasoner", task
        self.sees_tool, self.instructions = sees_tool, instructions

    def prompt(self, state: TeamState) -> str:
        s = state.task_state
        lines = [(INSTRUCTIONS["reasoner"] + "\n" if self.instructions else "") + self.task.statement(s.problem)]
        if s.answers:
            lines.append(f"last: {_shown(s.answers[-1])}")
        if self.sees_tool and len(s.tool_answers) >= 2:  # the tool's previous turn (this turn's is not shown)
            lines.append(f"tool: {_shown(s.tool_answers[-2])}")
        return "\n".join(lines) + "\nanswer:"

    def parse(self, text: str) -> Parsed:
        return parse_answer(text)

    def apply(self, state: TeamState, parsed: Parsed):
        res = self.task.step(state.task_state, parsed.action if parsed.ok else None)
        local = REASONER_RIGHT * res.solved if parsed.ok else 0.0
        return replace(state, task_state=res.state), local, {"terms": res.terms, "agreed": res.state.agreed}

    def demo(self, state: TeamState) -> str:
        return f"\\boxed{{{self.task.gold(state.task_state.problem)}}}"

    def naive(self, state: TeamState) -> str:
        s = state.task_state
        if s.answers and s.answers[-1] is not None:
            return f"\\boxed{{{s.answers[-1]}}}"
        return f"\\boxed{{{self.task.naive_answer(s)}}}"

    def noise(self, state: TeamState, rng: random.Random) -> str:
        return f"\\boxed{{{self.task.noise_answer(state.task_state, rng)}}}"


def _agreed(state: TeamState) -> bool:
    return state.task_state.agreed


def _never(state: TeamState) -> bool:
    return False


def register_math_harnesses(task_name: str) -> None:
    """Register `single` and `mas` for a maths task."""

    def single(task, max_turns: int = 4, instructions: bool = False, parse_penalty: float = -0.5,
               **view) -> Harness:
        ignore_planning_view(view, "maths")
        return Harness("single", task, [ReasonerRole(task, False, instructions)], max_turns, parse_penalty,
                       stop=_never)

    def mas(task, max_turns: int = 4, instructions: bool = False, parse_penalty: float = -0.5,
            **view) -> Harness:
        ignore_planning_view(view, "maths")
        roles = [ToolRole(task, instructions), ReasonerRole(task, True, instructions)]
        return Harness("mas", task, roles, max_turns, parse_penalty, stop=_agreed)

    register_harness(task_name, "single", single)
    register_harness(task_name, "mas", mas)


for _task in ("math", "polaris", "aime24", "aime25", "olympiadbench"):
    register_math_harnesses(_task)
