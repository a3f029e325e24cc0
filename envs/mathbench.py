"""Real maths data as tasks: `polaris` (training: train and val splits; its test split is the
evaluation sets in `test_sets`) and `aime24`, `aime25`, `olympiadbench` (test only), read from
`data_dir` by envs/math_data.py; nothing is fetched. Training and validation problems are
deduplicated against every test set by a hash of the normalised statement; the training split is
walked cyclically (`instance("train", i)` for any i), validation and test are indexed as they are.

The state is envs/arith.py's `MathState`, so the maths harnesses (roles/maths.py) serve these
tasks and the tiny one alike (each is a `envs.base.MathTask`); answers are checked by envs/answers.check (math-verify, gold first).
"""
from __future__ import annotations

from functools import partial

from envs.answers import check
from envs.arith import MathRewards, MathState, answer_step
from envs.base import FileSplits, StepResult, register
from envs.data_files import Tally
from envs.math_data import SOURCES, TRAIN_SOURCES, MathProblem, deduplicate, load


class MathBench(FileSplits):
    def __init__(self, name: str, data_dir: str, test_sets: dict | None = None, seed: int = 0,
                 rewards: dict | None = None):
        if name not in SOURCES:
            raise ValueError(f"unknown maths data set {name!r}; allowed: {', '.join(SOURCES)}")
        if not data_dir:
            raise ValueError(f"env.data_dir is required for {name}: the directory a hub download of it left")
        self.name, self.data_dir, self.seed = name, data_dir, seed
        self.test_sets = {k: dict(v) for k, v in (test_sets or {}).items()}
        for k, spec in self.test_sets.items():
            if not spec.get("data_dir"):
                raise ValueError(f"env.test_sets.{k} needs a data_dir (and a source, default {k!r})")
            if set(spec) - {"source", "data_dir"}:
                raise ValueError(f"env.test_sets.{k}: unknown keys {sorted(set(spec) - {'source', 'data_dir'})}; "
                                 "allowed: source, data_dir")
            if spec.get("source", k) not in set(SOURCES) - set(TRAIN_SOURCES):
                raise ValueError(f"env.test_sets.{k}.source {spec.get('source', k)!r} is not an evaluation set; "
                                 f"allowed: {', '.join(s for s in SOURCES if s not in TRAIN_SOURCES)}")
        self.rewards = MathRewards.from_config(rewards)
        self._splits: dict[str, list[MathProblem]] = {}
        self.tallies: dict[str, Tally] = {}  # per split: the files and rows read, what was dropped and why
        self.dropped: dict[str, int] = {}  # per split: problems dropped as duplicates of test ones

    def _tests(self, tally: Tally | None = None) -> list[MathProblem]:
        if self.name not in TRAIN_SOURCES:
            return load(self.name, self.data_dir, "test", tally=tally)
        if not self.test_sets:
            raise ValueError(f"{self.name} is training data: its test split is env.test_sets "
                             "({name: {source, data_dir}}, e.g. aime24, aime25, olympiadbench)")
        return [p for k, spec in self.test_sets.items()
                for p in load(spec.get("source", k), spec["data_dir"], "test", f"env.test_sets.{k}", tally)]

    def _read(self, split: str, tally: Tally) -> list[MathProblem]:
        if split == "test":
            return self._tests(tally)
        if self.name not in TRAIN_SOURCES:
            raise ValueError(f"{self.name} is an evaluation set: it has a test split only (train on polaris)")
        got, self.dropped[split] = deduplicate(load(self.name, self.data_dir, split, tally=tally), self._tests())
        if self.dropped[split]:
            tally.skipped["duplicates of a test problem or of an earlier row"] += self.dropped[split]
        return got

    def initial_state(self, problem: MathProblem) -> MathState:
        return MathState(problem)

    def statement(self, problem: MathProblem) -> str:
        return problem.statement

    def gold(self, problem: MathProblem) -> str:
        return problem.answer

    def is_solved(self, state: MathState) -> bool:
        return check(state.problem.answer, state.answer).correct

    def oracle(self, state: MathState) -> str:
        return state.problem.answer

    def step(self, state: MathState, answer: str | None) -> StepResult:
        return answer_step(state, answer, state.problem.answer, self.rewards)


for _name in SOURCES:
    register(_name, partial(MathBench, _name), from_files=True)  # its options: MathBench's, less the name
