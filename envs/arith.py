"""Maths: answer a word problem; judged on the gold answer, which no role sees.

The tiny default, `math` (procedurally generated, so the tiny model can learn it on a laptop): a
templated story holds two two-digit numbers and a one-digit count, combined by a two-operation
expression the story describes (`Ann has 37 pens and buys 4 bags of 12 more .` is 37 + 4 * 12).
Reading the structure off the story is a matter of copying numbers into the right template;
computing its value exactly is what a tiny model cannot do in its head, and what a program does
exactly. Each template also has a plausible misreading (a sign or a bracket wrong: the third entry
of `TEMPLATES`, `Problem.naive_expression`), which the naive demonstrators (roles/maths.py) write.

A tool program runs only in the sandbox (`sandbox.run_program`), except a program that is exactly
`print(<arithmetic>)`, integer literals combined by + - * and brackets (what the oracle writes and
what the tiny model mostly writes): its value is computed by walking its syntax tree (nothing is
executed; tests/envs/test_arith.py checks it against the sandbox), which keeps the warm start's
demonstrations and a laptop run's steps fast. Results are memoised per program text.

State and answers: `MathState` holds the latest tool program and its printed answer and the
reasoner's latest answer; the episode is solved when the reasoner's answer is the gold answer
(envs/answers.check, math-verify gold first). Task reward of one reasoner answer (`MathRewards`):
right = 1.0 if it is the gold answer.
"""
from __future__ import annotations

import ast
import random
from dataclasses import dataclass, replace
from functools import lru_cache

import sandbox
from envs.answers import check
from envs.base import StepResult, draw, register

LIMITS = sandbox.Limits(timeout_s=2.0, memory_mb=256, output_bytes=4096)
NAMES = ("Ann", "Bob", "Cy", "Dee", "Eve", "Fay", "Gus", "Hal")
ITEMS = ("pens", "cards", "eggs", "nuts", "shells", "stamps")

# template: (the story: {n} a name, {i} an item, {a} {b} {c} two-digit numbers, {k} a count; the expression
# the oracle prints; the naive misreading, a sign or a bracket wrong)
TEMPLATES = {
    "gain_loss": ("{n} has {a} {i} , gets {b} more and gives {c} away .", "{a} + {b} - {c}", "{a} + {b} + {c}"),
    "loss_gain": ("{n} has {a} {i} , gives {c} away and gets {b} more .", "{a} - {c} + {b}", "{a} - {c} - {b}"),
    "bags_loose": ("{n} buys {k} bags of {a} {i} and {b} loose {i} .", "{k} * {a} + {b}", "{k} * ({a} + {b})"),
    "has_bags": ("{n} has {a} {i} and buys {k} bags of {b} more .", "{a} + {k} * {b}", "({a} + {k}) * {b}"),
    "pooled": ("{n} has {a} {i} and a friend has {b} ; each is worth {k} coins .", "({a} + {b}) * {k}",
               "{a} + {b} * {k}"),
    "bags_eaten": ("{n} buys {k} bags of {a} {i} and eats {b} .", "{k} * {a} - {b}", "{k} * ({a} - {b})"),
}
QUESTION = {"pooled": "how many coins ?"}  # default: how many {i} now ?


def safe_arith(program: str) -> int | None:
    """The value `program` prints if it is exactly `print(<expr>)` with <expr> integer literals and
    + - * and brackets (at most 12 operations, literals below 10**6); None for anything else."""
    try:
        tree = sandbox.parse_python(program.strip())
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr):
        return None
    call = tree.body[0].value
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "print"
            and len(call.args) == 1 and not call.keywords):
        return None
    budget = [12]

    def value(node) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int and 0 <= node.value < 10**6:
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
            budget[0] -= 1
            if budget[0] < 0:
                raise ValueError("too long")
            a, b = value(node.left), value(node.right)
            return a + b if isinstance(node.op, ast.Add) else a - b if isinstance(node.op, ast.Sub) else a * b
        raise ValueError("not arithmetic")

    try:
        return value(call.args[0])
    except (ValueError, RecursionError):
        return None


@lru_cache(maxsize=65536)
def run_tool(program: str) -> str | None:
    """What the program printed (its last non-empty line), or None if it failed in any way (a
    traceback is never an answer)."""
    v = safe_arith(program)
    if v is not None:
        return str(v)
    r = sandbox.run_program(program, LIMITS)
    if not r.ok:
        return None
    lines = [line.strip() for line in r.out.splitlines() if line.strip()]
    return lines[-1] if lines else None


@dataclass(frozen=True)
class MathRewards:
    right: float = 1.0  # the reasoner's answer is the gold answer

    @classmethod
    def from_config(cls, rewards: dict | None) -> "MathRewards":
        return cls(**(rewards or {}))


@dataclass(frozen=True)
class Problem:
    template: str
    name: str
    item: str
    numbers: tuple[tuple[str, int], ...]  # (placeholder, value)

    @property
    def key(self) -> str:
        return f"math|{self.template}|{self.name}|{self.item}|" + ",".join(f"{k}={v}" for k, v in self.numbers)

    def _fill(self, text: str) -> str:
        return text.format(n=self.name, i=self.item, **dict(self.numbers))

    @property
    def statement(self) -> str:
        q = QUESTION.get(self.template, f"how many {self.item} now ?")
        return self._fill(TEMPLATES[self.template][0]) + " " + q

    @property
    def expression(self) -> str:
        return self._fill(TEMPLATES[self.template][1])

    @property
    def naive_expression(self) -> str:
        return self._fill(TEMPLATES[self.template][2])

    @property
    def answer(self) -> str:
        return str(safe_arith(f"print({self.expression})"))


@dataclass(frozen=True)
class MathState:
    """Per turn, in order: the tool's program (None: unparsable) and what it printed (None: no
    answer: it failed, printed nothing or was unparsable), and the reasoner's answer (None:
    unparsable). The team's answer is the reasoner's latest."""

    problem: object               # Problem here; envs/math_data.MathProblem for the real sets
    programs: tuple[str | None, ...] = ()
    tool_answers: tuple[str | None, ...] = ()
    answers: tuple[str | None, ...] = ()
    agreed: bool = False          # the reasoner's latest answer is the tool's of the same turn

    @property
    def answer(self) -> str | None:
        return self.answers[-1] if self.answers else None


def tool_step(state: MathState, program: str | None) -> MathState:
    """The tool's turn: its program run (sandbox, or the arithmetic fast path)."""
    out = run_tool(program) if program is not None else None
    return replace(state, programs=state.programs + (program,), tool_answers=state.tool_answers + (out,),
                   agreed=False)


def answer_step(state: MathState, answer: str | None, gold: str, rewards: "MathRewards") -> StepResult:
    """The reasoner's turn: its answer (a `\\boxed{}`'s text, None if unparsable) becomes the team's.
    They agree if the tool acted this turn and printed the same value (math-verify, the tool's as
    the reference: agreement is observable, unlike the gold)."""
    right = check(gold, answer).correct
    tool = state.tool_answers[-1] if len(state.tool_answers) == len(state.answers) + 1 else None
    agreed = tool is not None and answer is not None and check(tool, answer).correct
    new = replace(state, answers=state.answers + (answer,), agreed=agreed)
    terms = {"right": rewards.right * right}
    return StepResult(new, sum(terms.values()), right, terms, {"right": right, "agreed": agreed})


class Arith:
    """The tiny maths task (see the module docstring): two-digit numbers in [lo, hi], counts in
    [2, max_count]; `templates` a subset of TEMPLATES (None: all). A `envs.base.MathTask`."""

    name = "math"

    def __init__(self, lo: int = 10, hi: int = 99, max_count: int = 9, templates: list[str] | None = None,
                 seed: int = 0, rewards: dict | None = None):
        if not 10 <= lo < hi <= 99:
            raise ValueError(f"math numbers must satisfy 10 <= lo < hi <= 99, got {lo}, {hi}")
        if not 2 <= max_count <= 9:
            raise ValueError(f"math max_count must be in 2..9, got {max_count}")
        self.templates = list(templates or TEMPLATES)
        unknown = [t for t in self.templates if t not in TEMPLATES]
        if unknown or not self.templates:
            raise ValueError(f"unknown math templates {unknown}; allowed: {', '.join(TEMPLATES)}")
        self.lo, self.hi, self.max_count, self.seed = lo, hi, max_count, seed
        self.rewards = MathRewards.from_config(rewards)

    def _sample(self, rng: random.Random) -> Problem | None:
        t = rng.choice(self.templates)
        a, b, c = (rng.randint(self.lo, self.hi) for _ in range(3))
        nums = {"a": a, "b": b, "c": c, "k": rng.randint(2, self.max_count)}
        used = tuple((k, v) for k, v in nums.items() if "{" + k + "}" in TEMPLATES[t][0])
        p = Problem(t, rng.choice(NAMES), rng.choice(ITEMS), used)
        vals = [v for _, v in used]
        # a story whose numbers repeat is ambiguous to copy; one with a negative total is not a story;
        # one whose misreading happens to give the right value would not tell the two apart
        misread = safe_arith(f"print({p.naive_expression})")
        if len(set(vals)) < len(vals) or int(p.answer) < 0 or misread == int(p.answer):
            return None
        return p

    def instance(self, split: str, index: int) -> Problem:
        stream = f"math/{self.seed}/{self.lo}/{self.hi}/{self.max_count}/{','.join(self.templates)}"
        return draw(split, index, stream, self._sample)

    def initial_state(self, problem: Problem) -> MathState:
        return MathState(problem)

    def statement(self, problem: Problem) -> str:
        return problem.statement

    def gold(self, problem: Problem) -> str:
        return problem.answer

    def is_solved(self, state: MathState) -> bool:
        return check(self.gold(state.problem), state.answer).correct

    def oracle(self, state: MathState) -> str:
        return self.gold(state.problem)

    def step(self, state: MathState, answer: str | None) -> StepResult:
        return answer_step(state, answer, self.gold(state.problem), self.rewards)


register("math", Arith)
