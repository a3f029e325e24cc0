"""Real code benchmarks as tasks: `apps`, `codecontests`, `livecodebench` (envs/code_data.py reads
them from `data_dir`; nothing is fetched). A problem's program is judged on its hidden (private)
tests in the sandbox: the task reward is the pass ratio, solved = all pass. Training and validation problems
are deduplicated against this source's test split and every set in `eval_sets` ({name: {source,
data_dir, ...}}); the training split is walked cyclically (`instance("train", i)` for any i),
validation and test are indexed as they are (an index past the end is an error).

The state is envs/code.py's `CodeState`, so the code harnesses (roles/code.py, boards in
roles/codebench.py) serve these tasks and the tiny one alike.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from functools import lru_cache, partial

import sandbox
from envs.base import FileSplits, StepResult, register
from envs.code import CodeRewards, CodeState
from envs.code_data import SOURCES, CodeProblem, deduplicate, load
from envs.data_files import Tally
from sandbox.judge import read_value, same_stdout


_EVAL_SET_KEYS = {"source", "data_dir", "release", "start", "end"}  # load's arguments


def _same_value(got, expected) -> bool:
    """Equal as plain values, tuples read as lists; APPS's quirk: an expected one-element list
    also matches its element."""
    def plain(v):
        return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v
    g, e = plain(got), plain(expected)
    return g == e or (isinstance(e, list) and len(e) == 1 and g == e[0])


@lru_cache(maxsize=16384)
def _run(program: str, mode: str, fn: str | None, inputs: tuple, timeout_s: float, memory_mb: int) -> tuple:
    """Raw outputs per input (stdout text, or a call's JSON), None where the run failed."""
    limits = sandbox.Limits(timeout_s=timeout_s, memory_mb=memory_mb)
    if mode == "call":
        rs = sandbox.run_calls(program, fn, [tuple(x) for x in inputs], limits)
    else:
        rs = sandbox.run_stdin(program, list(inputs), limits)
    return tuple(r.out if r.ok else None for r in rs)


def _freeze(x):
    return tuple(_freeze(v) for v in x) if isinstance(x, (list, tuple)) else x


class CodeBench(FileSplits):
    def __init__(self, name: str, data_dir: str, release: int = 6, start: str | None = None,
                 end: str | None = None, eval_sets: dict | None = None, timeout_s: float = 6.0,
                 memory_mb: int = 1024, seed: int = 0, rewards: dict | None = None):
        if name not in SOURCES:
            raise ValueError(f"unknown code benchmark {name!r}; allowed: {', '.join(SOURCES)}")
        if not data_dir:
            raise ValueError(f"env.data_dir is required for {name}: the directory a hub download of it left")
        self.name, self.data_dir, self.seed = name, data_dir, seed
        self.window = {"release": release, "start": start, "end": end}
        self.eval_sets = {k: dict(v) for k, v in (eval_sets or {}).items()}
        for k, spec in self.eval_sets.items():
            if not spec.get("data_dir"):
                raise ValueError(f"env.eval_sets.{k} needs a data_dir (and a source, default {k!r})")
            if set(spec) - _EVAL_SET_KEYS:
                raise ValueError(f"env.eval_sets.{k}: unknown keys {sorted(set(spec) - _EVAL_SET_KEYS)}; allowed: "
                                 f"{', '.join(sorted(_EVAL_SET_KEYS))}")
            if spec.get("source", k) not in SOURCES:
                raise ValueError(f"env.eval_sets.{k}.source {spec.get('source', k)!r} is not a code benchmark; "
                                 f"allowed: {', '.join(SOURCES)}")
        self.timeout_s, self.memory_mb = timeout_s, memory_mb
        self.rewards = CodeRewards.from_config(rewards)
        self._splits: dict[str, list[CodeProblem]] = {}
        self.tallies: dict[str, Tally] = {}  # per split: the files and rows read, what was dropped and why
        self.dropped: dict[str, int] = {}  # per split: problems dropped as duplicates of evaluation ones

    def _evaluation(self) -> list[list[CodeProblem]]:
        evals = [load(self.name, self.data_dir, "test", **(self.window if self.name == "livecodebench" else {}))]
        for name, spec in self.eval_sets.items():
            spec = dict(spec)
            evals.append(load(spec.pop("source", name), spec.pop("data_dir"), "test", setting=f"env.eval_sets.{name}",
                              **spec))
        return evals

    def _read(self, split: str, tally: Tally) -> list[CodeProblem]:
        kw = self.window if self.name == "livecodebench" else {}
        got = load(self.name, self.data_dir, split, **kw, tally=tally)
        if split != "test":
            got, self.dropped[split] = deduplicate(got, *self._evaluation())
            if self.dropped[split]:
                tally.skipped["duplicates of an evaluation problem or of an earlier row"] += self.dropped[split]
        return got

    def initial_state(self, problem: CodeProblem) -> CodeState:
        return CodeState(problem)

    def is_solved(self, state: CodeState) -> bool:
        return state.pass_ratio == 1.0

    def oracle(self, state: CodeState) -> str | None:
        return state.problem.reference

    def outputs(self, program: str, problem: CodeProblem, inputs) -> list:
        raw = _run(program, problem.mode, problem.fn, tuple(_freeze(x) for x in inputs), self.timeout_s,
                   self.memory_mb)
        if problem.mode == "stdin":
            return list(raw)
        return [read_value(r)[1] if r is not None and read_value(r)[0] else None for r in raw]

    def expected(self, problem: CodeProblem, inputs) -> list | None:
        """The reference solution's outputs (it runs in the sandbox too); None without one."""
        return None if problem.reference is None else self.outputs(problem.reference, problem, inputs)

    def same(self, got, expected) -> bool:
        if isinstance(expected, str):
            return isinstance(got, str) and same_stdout(got, expected)
        return _same_value(got, expected)

    def step(self, state: CodeState, program: str) -> StepResult:
        p = state.problem
        got = self.outputs(program, p, [i for i, _ in p.private])
        ok = [g is not None and self.same(g, o) for g, (_, o) in zip(got, p.private)]
        ratio = sum(ok) / len(ok)
        digest = hashlib.sha256(program.encode()).hexdigest()[:8]
        new = replace(state, program=program, pass_ratio=ratio, steps=state.steps + 1, feedback=None,
                      tests_passed=False, history=state.history + (f"program {digest}",))
        terms = {"pass": self.rewards.pass_ * ratio}
        return StepResult(new, sum(terms.values()), ratio == 1.0, terms, {"pass_ratio": ratio})


for _name in SOURCES:
    register(_name, partial(CodeBench, _name), from_files=True)  # its options: CodeBench's, less the name
