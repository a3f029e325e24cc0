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

The maths family (`maths_family`, conf/family/math.yaml) serves every maths task, a
`envs.base.MathTask`; what differs per task is its demonstrators (`ArithDemos` for the tiny task,
`BenchDemos` for the data sets), which live here with the roles, not in the task.

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

from typing import Protocol

from envs.answers import check, last_boxed
from envs.arith import MathState, safe_arith, tool_step
from envs.base import MathTask
from roles.base import Family, Parsed, TeamState, never, no_tool, register_team
from roles.text import head, parse_program

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


class Demos(Protocol):
    """A maths task's demonstrators for the tiny warm start (marl/tiny.py): the tool's programs and
    the reasoner's answers, right (oracle), naive and wrong (noise)."""

    def oracle_program(self, state: MathState) -> str: ...
    def naive_program(self, state: MathState) -> str: ...
    def naive_answer(self, state: MathState) -> str: ...
    def noise_program(self, state: MathState, rng: random.Random) -> str: ...
    def noise_answer(self, state: MathState, rng: random.Random) -> str: ...


class ArithDemos:
    """The tiny task's (envs/arith.py): the story's expression, and its misreading (a sign or a
    bracket wrong) as the naive tool's program and the naive reasoner's turn-1 answer."""

    def __init__(self, task: MathTask):
        self.task = task

    def oracle_program(self, state: MathState) -> str:
        return f"print({state.problem.expression})"

    def naive_program(self, state: MathState) -> str:
        return f"print({state.problem.naive_expression})"

    def naive_answer(self, state: MathState) -> str:
        """The misreading's value: what the naive reasoner answers in turn 1."""
        return str(safe_arith(f"print({state.problem.naive_expression})"))

    def noise_program(self, state: MathState, rng: random.Random) -> str:
        """The story's numbers in order under random operations (rarely the right expression)."""
        vals = [str(v) for _, v in state.problem.numbers]
        expr = vals[0] + "".join(f" {rng.choice('+-*')} {v}" for v in vals[1:])
        return f"print({expr})"

    def noise_answer(self, state: MathState, rng: random.Random) -> str:
        return str(int(self.task.gold(state.problem)) + rng.choice((-10, -2, -1, 1, 2, 10)))


class BenchDemos:
    """The real data sets' (envs/mathbench.py), for the warm-start interface only (a pretrained
    model needs none): they hold no programs or wrong answers, so these are the gold answer printed
    and a constant wrong one."""

    def __init__(self, task: MathTask):
        self.task = task

    def oracle_program(self, state: MathState) -> str:
        return f"print({state.problem.answer!r})"

    def naive_program(self, state: MathState) -> str:
        return self.oracle_program(state)

    def naive_answer(self, state: MathState) -> str:
        return state.problem.answer

    def noise_program(self, state: MathState, rng: random.Random) -> str:
        return "print(0)"

    def noise_answer(self, state: MathState, rng: random.Random) -> str:
        return "0"


class MathToolRole:
    """Writes a program that prints the answer; it runs in the sandbox (or the task's arithmetic
    fast path, envs/arith.run_tool). Not planning's `ProgramToolRole`: this program must parse as
    Python and call print (`parse_program`), what it printed is an answer kept in the task state and
    judged against the gold answer, and the prompt is the story with the team's last answers;
    planning's is any ```python block, its output is free text shown to the plan agent and judged
    as an action."""

    blocking = True

    def __init__(self, task: MathTask, demos: Demos, instructions: bool):
        self.name, self.task, self.demos, self.instructions = "tool", task, demos, instructions

    def prompt(self, state: TeamState) -> str:
        s = state.task_state
        lines = [head(self.instructions, INSTRUCTIONS["tool"]) + self.task.statement(s.problem)]
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
        return self.demos.oracle_program(state.task_state)

    def naive(self, state: TeamState) -> str:
        s = state.task_state
        if s.programs and s.programs[-1] is not None:
            return s.programs[-1]
        return self.demos.naive_program(s)

    def noise(self, state: TeamState, rng: random.Random) -> str:
        return self.demos.noise_program(state.task_state, rng)


class ReasonerRole:
    """Answers in `\\boxed{}`; its answer is the team's."""

    blocking = True  # answers are checked by math-verify in a worker process

    def __init__(self, task: MathTask, demos: Demos, sees_tool: bool, instructions: bool):
        self.name, self.task, self.demos = "reasoner", task, demos
        self.sees_tool, self.instructions = sees_tool, instructions

    def prompt(self, state: TeamState) -> str:
        s = state.task_state
        lines = [head(self.instructions, INSTRUCTIONS["reasoner"]) + self.task.statement(s.problem)]
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
        return f"\\boxed{{{self.demos.naive_answer(s)}}}"

    def noise(self, state: TeamState, rng: random.Random) -> str:
        return f"\\boxed{{{self.demos.noise_answer(state.task_state, rng)}}}"


def _agreed(state: TeamState) -> bool:
    return state.task_state.agreed


def maths_family(demos_cls) -> Family:
    """The maths harnesses, demonstrated by `demos_cls(task)`."""

    def single(task, instructions: bool, tool: str | None = None):
        del tool  # null only (the family's rule)
        return [ReasonerRole(task, demos_cls(task), False, instructions)], never

    def mas(task, instructions: bool, tool: str | None = None):
        del tool  # null only (the family's rule)
        demos = demos_cls(task)
        return [MathToolRole(task, demos, instructions), ReasonerRole(task, demos, True, instructions)], _agreed

    return Family("maths", {"single": single, "mas": mas}, {"tool": no_tool("maths")}, max_turns=4)


register_team("math", maths_family(ArithDemos))
for _task in ("polaris", "aime24", "aime25", "olympiadbench"):
    register_team(_task, maths_family(BenchDemos))
