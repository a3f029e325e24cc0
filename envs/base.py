"""Task interface and registry.

A *task* hosts one problem family: seeded instance generation per split, a pure transition
function, the task reward and an oracle. Tasks know nothing of LLMs, prompts or trainers: what a
role says (its prompts and its demonstrators) lives in roles/. `Task` is what every harness needs;
`CodeTask` and `MathTask` add what the code and maths harnesses need.

Invariants every task keeps (checked for every registered task by tests/envs/test_registry.py):
- `instance(split, i)` is a pure function of (task config, split, i);
- train, validation and test instances are disjoint *by content*: `split_of(instance)` is a
  function of the instance's content alone, and `instance(split, i)` only returns instances
  whose content hashes into `split`;
- `step(state, action)` never mutates `state`; it returns a new state. Branching a rollout is
  therefore free and every candidate is applied to the very state its prompt was rendered from.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import random
import types
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

from envs.data_files import Tally

SPLITS = ("train", "val", "test")
# Share of the content-hash space owned by each split, in percent: 80 / 10 / 10.
_SPLIT_BUCKETS = {"train": range(0, 80), "val": range(80, 90), "test": range(90, 100)}


def split_of(content_key: str) -> str:
    """The split an instance belongs to, decided by a stable hash of its content."""
    bucket = int(hashlib.sha256(content_key.encode()).hexdigest(), 16) % 100
    for split, owned in _SPLIT_BUCKETS.items():
        if bucket in owned:
            return split
    raise AssertionError("buckets cover 0..99")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")


def draw(split: str, index: int, stream: str, sample: Callable[[random.Random], Any]) -> Any:
    """The index-th instance of `split`. Candidates come from `sample` on random streams seeded by
    (stream, split, index, attempt); the first that is not None and whose content (`.key`) hashes
    into `split` is it. `stream` names the task and every setting that shapes its instances."""
    check_split(split)
    attempt = 0
    while True:
        x = sample(random.Random(f"{stream}/{split}/{index}/{attempt}"))
        if x is not None and split_of(x.key) == split:
            return x
        attempt += 1


def training_order(problems: list, stream: str) -> list:
    """A file-backed training split in the order a run walks it: shuffled by `stream` (the source and
    env.seed), since files are often sorted (by difficulty, date or source) and a run starts at
    the top (a seed-dependent offset: marl/train.py)."""
    out = list(problems)
    random.Random(stream).shuffle(out)
    return out


class FileSplits(ABC):
    """The splits of a task read from files (envs/codebench.py, envs/mathbench.py): `_read(split,
    tally)` returns a split's problems, deduplicated, and counts in `tally` (envs/data_files.Tally)
    the files and rows it read and what it dropped; each split is read once. The training split is
    walked cyclically in a seeded order (any index); validation and test as they are (an index past
    the end is an error). Needs `name`, `seed`, `data_dir`, `_splits = {}` and `tallies = {}`."""

    @abstractmethod
    def _read(self, split: str, tally: Tally) -> list:
        """The problems of `split` as read from the files, deduplicated against evaluation data."""

    def problems(self, split: str) -> list:
        check_split(split)
        if split not in self._splits:
            self.tallies[split] = tally = Tally()
            got = self._read(split, tally)
            if not got:
                raise ValueError(f"{self.name} has no usable {split} problems: {tally.describe()}")
            self._splits[split] = training_order(got, f"{self.name}/{self.seed}") if split == "train" else got
        return self._splits[split]

    def check_sizes(self, need: dict[str, int], settings: dict[str, str] | None = None) -> None:
        """Read every split in `need` and refuse one with fewer problems than `need[split]` (a
        split asked for 0 is not read), before any work: `settings` names the setting that asked
        for each (default eval.n_val, eval.n_test)."""
        settings = {"val": "eval.n_val", "test": "eval.n_test", **(settings or {})}
        for split, n in need.items():
            if n > 0 and len(self.problems(split)) < n:
                got = len(self.problems(split))
                raise ValueError(f"{settings.get(split, split)}={n} but the {split} split of {self.name} has {got} "
                                 f"problems ({self.tallies[split].where()}); set {settings.get(split, split)} to "
                                 f"at most {got}")

    def instance(self, split: str, index: int) -> Any:
        problems = self.problems(split)
        if split == "train":
            return problems[index % len(problems)]
        if not 0 <= index < len(problems):
            raise IndexError(f"{self.name} {split} has {len(problems)} problems; asked for index {index} "
                             "(lower eval.n_val / eval.n_test)")
        return problems[index]


@dataclass(frozen=True)
class StepResult:
    """What one action did to the task.

    reward: the task (team) reward of this step; terms: its documented parts, summing to it.
    """

    state: Any
    reward: float
    solved: bool
    terms: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class Task(Protocol):
    name: str

    def instance(self, split: str, index: int) -> Any: ...
    def initial_state(self, instance: Any) -> Any: ...
    def step(self, state: Any, action: Any) -> StepResult: ...
    def oracle(self, state: Any) -> Any: ...  # a right action; None where none is (a dead end)
    def is_solved(self, state: Any) -> bool: ...


@runtime_checkable
class CodeTask(Task, Protocol):
    """What the code harnesses (roles/code.py) need of a code task: a state's program runs on the
    tester's inputs, and the reference solution says what those inputs should give.
    (envs/code.Code, envs/codebench.CodeBench)"""

    def expected(self, problem: Any, inputs: list) -> list | None: ...  # the reference's outputs; None: none
    def outputs(self, program: str, problem: Any, inputs: list) -> list: ...  # the program's (None: it failed)
    def same(self, got: Any, expected: Any) -> bool: ...  # an output matches an expected one


@runtime_checkable
class MathTask(Task, Protocol):
    """What the maths harnesses (roles/maths.py) need of a maths task: the problem as text, its gold
    answer (which no role sees; rewards read it), and `step(state, answer)`, the reasoner's answer
    (None: unparsable) made the team's. (envs/arith.Arith, envs/mathbench.MathBench)"""

    def statement(self, problem: Any) -> str: ...
    def gold(self, problem: Any) -> str: ...


_REGISTRY: dict[str, Callable[..., Task]] = {}
_FROM_FILES: set[str] = set()


def register(name: str, factory: Callable[..., Task], from_files: bool = False) -> None:
    """Register a task factory under `name`; a taken name is an error, never an overwrite.
    `from_files`: its instances come from a dataset on disk (`data_dir`), not from a generator."""
    if name in _REGISTRY:
        raise ValueError(f"task {name!r} is already registered ({_REGISTRY[name]!r})")
    _REGISTRY[name] = factory
    if from_files:
        _FROM_FILES.add(name)


def make(name: str, **kwargs: Any) -> Task:
    check_options(name, kwargs)
    return _REGISTRY[name](**kwargs)


def check_options(name: str, kwargs: dict) -> None:
    """Refuse an unknown task, or an option its factory does not take (`env.<option>`, e.g. one
    added with `+`), naming the allowed ones; nothing is built or read."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; registered tasks: {', '.join(sorted(_REGISTRY))}")
    params = inspect.signature(_REGISTRY[name]).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return  # a factory that forwards its options: the task checks them itself
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(f"unknown env option(s) {', '.join(f'env.{k}' for k in unknown)} for env={name}; "
                         f"allowed: {', '.join(params)}")
    _check_types(_REGISTRY[name], kwargs)


def _check_types(factory: Callable[..., Task], kwargs: dict) -> None:
    """Refuse an option of the wrong type, read off the factory's annotations (`size: int`,
    `max_moves: int | None`, `rewards: dict | None`), in marl.checks' form: a value such as
    `env.size=abc` would otherwise fail as a bare TypeError inside the task, or not at all
    (`env.seed=abc` seeds a generator). Ranges are the task's own checks, when it is made."""
    from marl.checks import Rule

    while isinstance(factory, functools.partial):
        factory = factory.func
    hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    for key, value in kwargs.items():
        hint = hints.get(key)
        kinds = set(typing.get_args(hint)) if isinstance(hint, types.UnionType) else {hint}
        null, kinds = type(None) in kinds, kinds - {type(None)}
        if len(kinds) != 1 or (kind := kinds.pop()) not in (int, float, bool, str, dict):
            continue  # a list or a richer type: the task checks it
        rule = Rule(kind, null=null)
        if not rule.type_ok(value):
            raise ValueError(f"env.{key}={value!r}; allowed: {rule.allowed()}")


def registered(from_files: bool = False) -> list[str]:
    """The generated tasks (every one is checked by tests/envs/test_registry.py), or with
    `from_files` also those read from a dataset."""
    return sorted(n for n in _REGISTRY if from_files or n not in _FROM_FILES)
