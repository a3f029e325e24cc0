"""Code: write a Python function `f(x)` from a statement; judged on hidden tests.

The tiny default, `code` (procedurally generated, so the tiny model can learn it on a laptop):
`f` is the composition of two list operations (sort, reverse, drop the first, drop the last,
keep the first three, keep every other) on short lists of digits, written as a pipeline of one
line per operation (`x = sorted(x)` then `x = x[:3]`), so that the two orders differ by the
order of two lines. The statement names the two
operations in a random order and shows three examples; the operations do not commute, but only
one of the examples, the second or the third, tells the two orders apart (the first is a simple
case, as a real statement's first example tends to be). The hidden tests (six
inputs, at least three of them telling the orders apart) never appear in any prompt; they judge
the program (`step`: the pass ratio) and the episode (`is_solved`: all pass).

Programs run only in the sandbox (`sandbox.run_calls`, call mode: inputs go in, results come out,
the parent compares). A program's results are memoised per (program text, inputs), so the K
candidates that wrote the same program run it once. A program whose text *is* one of the task's
own compositions (`program_text(inner, outer)`, what the oracle writes and what the tiny model
mostly writes) is not executed at all: its results are the task's own functions' (the same
values: tests/envs/test_code.py runs every composition in the sandbox and compares), which keeps
the warm start's demonstrations and a laptop run's steps fast.

Task reward of one program (`CodeRewards`): pass = 1.0 * the pass ratio on the hidden tests.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field, replace
from functools import lru_cache

import sandbox
from envs.base import StepResult, draw, register
from sandbox.judge import read_value, same_value

# name: (the pipeline line's expression of x, the function itself)
OPS = {
    "sort": ("sorted(x)", lambda x: sorted(x)),
    "reverse": ("x[::-1]", lambda x: x[::-1]),
    "drop first": ("x[1:]", lambda x: x[1:]),
    "drop last": ("x[:-1]", lambda x: x[:-1]),
    "first three": ("x[:3]", lambda x: x[:3]),
    "every other": ("x[::2]", lambda x: x[::2]),
}
LIMITS = sandbox.Limits(timeout_s=1.0, memory_mb=256)


def program_text(inner: str, outer: str) -> str:
    """`outer(inner(x))` as the pipeline the oracle writes."""
    return f"def f(x):\n    x = {OPS[inner][0]}\n    x = {OPS[outer][0]}\n    return x"


def apply(inner: str, outer: str, x: list[int]) -> list[int]:
    return OPS[outer][1](OPS[inner][1](list(x)))


def fmt(xs: list[int]) -> str:
    return " ".join(map(str, xs)) if xs else "-"


@dataclass(frozen=True)
class CodeRewards:
    pass_: float = 1.0  # times the hidden tests' pass ratio

    @classmethod
    def from_config(cls, rewards: dict | None) -> "CodeRewards":
        """From `env.rewards` (`pass` is a Python keyword, hence the field's underscore)."""
        return cls(**{("pass_" if k == "pass" else k): v for k, v in (rewards or {}).items()})


@dataclass(frozen=True)
class Problem:
    """One problem. `ops` as the statement lists them; (inner, outer) is the truth."""

    ops: tuple[str, str]
    inner: str
    outer: str
    examples: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  # shown in the statement
    hidden: tuple[tuple[int, ...], ...]  # inputs of the hidden tests (their outputs: `reference`)

    @property
    def key(self) -> str:
        return f"code|{self.inner}|{self.outer}|" + "|".join(fmt(list(i)) for i, _ in self.examples)

    def reference(self, x) -> list[int]:
        return apply(self.inner, self.outer, x)

    @property
    def statement(self) -> str:
        lines = [f"ops: {self.ops[0]} , {self.ops[1]}"]
        lines += [f"{fmt(list(i))} -> {fmt(list(o))}" for i, o in self.examples]
        return "\n".join(lines)

    @property
    def key_example(self) -> int:
        """The index of the example that tells the two orders apart."""
        return next(j for j, (i, o) in enumerate(self.examples) if apply(self.outer, self.inner, list(i)) != list(o))


@dataclass(frozen=True)
class CodeState:
    problem: Problem
    program: str | None = None   # the current program (the coder's last)
    pass_ratio: float = 0.0      # of the current program on the hidden tests (never shown to a role)
    feedback: str | None = None  # what the team's own tests said of the current program (shown to the coder)
    tests_passed: bool = False   # the current program passes the team's own tests (an observable stop)
    steps: int = 0
    history: tuple[str, ...] = field(default=())


def _distinguishes(inner: str, outer: str, x: list[int]) -> bool:
    return apply(inner, outer, x) != apply(outer, inner, x)


TEMPLATES = {program_text(a, b): (a, b) for a in OPS for b in OPS if a != b}


@lru_cache(maxsize=65536)
def _run(program: str, inputs: tuple[tuple[int, ...], ...]) -> tuple[str, ...]:
    """The program's results (JSON, "" for a failed call) on `inputs`: in the sandbox, or by the
    task's own functions for the task's own compositions (module docstring)."""
    if program.strip() in TEMPLATES:
        inner, outer = TEMPLATES[program.strip()]
        return tuple(json.dumps(apply(inner, outer, list(x))) for x in inputs)
    return tuple(r.out if r.ok else "" for r in sandbox.run_calls(program, "f", [(list(x),) for x in inputs], LIMITS))


def results(program: str, inputs) -> list[tuple[bool, list | None]]:
    """(answered with a list, the list) per input."""
    out = []
    for text in _run(program, tuple(tuple(x) for x in inputs)):
        ok, v = read_value(text) if text else (False, None)
        out.append((ok and isinstance(v, list), v if ok else None))
    return out


def passes(program: str, problem: Problem, inputs) -> list[bool]:
    return [same_value(text, problem.reference(x)) if text else False
            for text, x in zip(_run(program, tuple(tuple(x) for x in inputs)), inputs)]


class Code:
    """The tiny code task (see the module docstring). `hidden` tests per problem, list lengths in
    [min_len, max_len].

    What the code harnesses (roles/code.py) need of a code task, here and in envs/codebench.py:
    `expected(problem, inputs)` (the reference solution's outputs), `outputs(program, problem,
    inputs)` (the program's; None where a run failed) and `same(got, expected)`."""

    name = "code"

    def __init__(self, min_len: int = 3, max_len: int = 5, hidden: int = 6, seed: int = 0,
                 ops: list[str] | None = None, rewards: dict | None = None):
        if not 2 <= min_len <= max_len <= 8:
            raise ValueError(f"code list lengths must satisfy 2 <= min_len <= max_len <= 8, got {min_len}, {max_len}")
        if hidden < 3:
            raise ValueError(f"code needs at least 3 hidden tests, got {hidden}")
        self.ops = list(ops or OPS)
        unknown = [o for o in self.ops if o not in OPS]
        if unknown or len(self.ops) < 2:
            raise ValueError(f"unknown code ops {unknown} (need at least 2); allowed: {', '.join(OPS)}")
        self.min_len, self.max_len, self.hidden, self.seed = min_len, max_len, hidden, seed
        self.rewards = CodeRewards.from_config(rewards)
        # pairs that some inputs tell apart and others do not (so examples can hide the order)
        probe_rng = random.Random(0)
        probe = [list(self._list(probe_rng)) for _ in range(200)]
        self.pairs = [(a, b) for a in self.ops for b in self.ops if a < b
                      and len({_distinguishes(a, b, x) for x in probe}) == 2]
        if not self.pairs:
            raise ValueError(f"no pair of the code ops {self.ops} can hide its order in examples")

    def _list(self, rng: random.Random) -> tuple[int, ...]:
        return tuple(rng.randrange(10) for _ in range(rng.randint(self.min_len, self.max_len)))

    def _sample(self, rng: random.Random) -> Problem | None:
        a, b = rng.choice(self.pairs)
        inner, outer = (a, b) if rng.random() < 0.5 else (b, a)
        same = [x for x in (self._list(rng) for _ in range(40)) if not _distinguishes(inner, outer, list(x))]
        apart = [x for x in (self._list(rng) for _ in range(40)) if _distinguishes(inner, outer, list(x))]
        if len(same) < 2 or len(apart) < 1 + 3:
            return None
        shown = [same[0], same[1]]
        shown.insert(rng.randrange(1, 3), apart[0])  # never first (module docstring)
        shown_set = set(shown)
        hidden = [x for x in apart[1:] if x not in shown_set][:3]
        hidden += [x for x in (self._list(rng) for _ in range(40)) if x not in shown_set][:self.hidden - 3]
        if len(hidden) < self.hidden:
            return None
        ops = (a, b) if rng.random() < 0.5 else (b, a)
        return Problem(ops, inner, outer, tuple((x, tuple(apply(inner, outer, list(x)))) for x in shown),
                       tuple(hidden))

    def instance(self, split: str, index: int) -> Problem:
        """The index-th instance of a split (envs.base.draw)."""
        stream = f"code/{self.seed}/{self.min_len}/{self.max_len}/{self.hidden}/{','.join(self.ops)}"
        return draw(split, index, stream, self._sample)

    def initial_state(self, problem: Problem) -> CodeState:
        return CodeState(problem)

    def is_solved(self, state: CodeState) -> bool:
        return state.pass_ratio == 1.0

    def oracle(self, state: CodeState) -> str:
        return program_text(state.problem.inner, state.problem.outer)

    def expected(self, problem: Problem, inputs) -> list:
        return [problem.reference(list(x)) for x in inputs]

    def outputs(self, program: str, problem: Problem, inputs) -> list:
        return [v if ok else None for ok, v in results(program, [list(x) for x in inputs])]

    def same(self, got, expected) -> bool:
        return isinstance(got, (list, tuple)) and list(got) == list(expected)

    def step(self, state: CodeState, program: str) -> StepResult:
        ok = passes(program, state.problem, state.problem.hidden)
        ratio = sum(ok) / len(ok)
        digest = hashlib.sha256(program.encode()).hexdigest()[:8]
        new = replace(state, program=program, pass_ratio=ratio, steps=state.steps + 1, feedback=None,
                      tests_passed=False,
                      history=state.history + (f"program {digest}",))
        terms = {"pass": self.rewards.pass_ * ratio}
        return StepResult(new, sum(terms.values()), ratio == 1.0, terms, {"pass_ratio": ratio})


register("code", Code)
