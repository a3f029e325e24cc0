"""Roles and harnesses: who acts in which order, what each sees, how its text becomes an action.

A *harness* is a team of roles over a task. The state it carries, `TeamState`, is immutable:
`act(state, role, text)` returns a new state and leaves the old one untouched, so the K
candidates of a role are each applied to their own copy of the very state their prompt was
rendered from (the reference implementation's defect 2 cannot happen by construction).

Reward of one action: `local + alpha * team`, where
- local: the role's own contribution (documented by each role; a failed parse gives
  `parse_penalty` and leaves the task where it was);
- team: 1.0 if the team has solved the task once this action is applied, else 0.0; read from the
  state the action produced, never from another copy.

A *family* (`Family`) is the harnesses of one kind of task, built from the options only it reads:
planning (roles/planning.py, one board per task), code (roles/code.py) and maths (roles/maths.py).
Each task module registers its task's family once, `register_team(<task>, <family>)`;
`make_harness(task, name, **options)` builds one of its teams and refuses an option the family
does not read, so a setting meant for another family is never silently dropped.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol

from marl.checks import FLAG, Int, Num, Rule

TOOL_WORKERS = 32  # threads running blocking tool work (each mostly waits on a child process)
_POOL: ThreadPoolExecutor | None = None


def tool_pool() -> ThreadPoolExecutor:
    """The bounded pool every harness runs blocking tool work in (made on first use)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=TOOL_WORKERS, thread_name_prefix="marl-tool")
    return _POOL


@dataclass(frozen=True)
class Parsed:
    ok: bool
    action: Any = None
    error: str = ""


@dataclass(frozen=True)
class TeamState:
    task_state: Any
    turn: int = 0
    tool_output: str | None = None  # what the tool returned this turn; shown to later roles
    done: bool = False


@dataclass(frozen=True)
class Outcome:
    state: TeamState
    local: float
    team: float
    parse_ok: bool
    solved: bool
    info: dict[str, Any] = field(default_factory=dict)


class Role(Protocol):
    name: str
    blocking: bool  # apply() does blocking work (runs a program): the harness runs it off the event loop

    def prompt(self, state: TeamState) -> str: ...
    def parse(self, text: str) -> Parsed: ...
    def apply(self, state: TeamState, parsed: Parsed) -> tuple[TeamState, float, dict]: ...
    def demo(self, state: TeamState) -> str: ...  # the oracle's response, for warm-start data
    def naive(self, state: TeamState) -> str: ...  # a weaker demonstrator's (plausible heuristic) response
    def noise(self, state: TeamState, rng: Any) -> str: ...  # a plausible wrong response


class Harness:
    """Roles in turn order over one task. A turn is every role acting once; the episode ends on
    what the team can observe, `stop(state)` (checked after every action), or after `max_turns`
    turns. The default stop is the task being solved, which the planning tasks show every role;
    where success is judged on what no role sees (code: hidden tests) the harness stops on its
    own evidence instead (code: the program passes the tester's tests), so the length of an
    episode never tells a role what it must not know. `Outcome.solved` and the team reward are
    always the task's own verdict."""

    def __init__(self, name: str, task: Any, roles: list[Role], max_turns: int = 4,
                 parse_penalty: float = -0.5, stop: Callable[[TeamState], bool] | None = None):
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        self.name, self.task, self.roles = name, task, roles
        self.role_names = [r.name for r in roles]
        self.max_turns, self.parse_penalty = max_turns, parse_penalty
        self.stops_when_solved = stop is None
        self.stop = stop or (lambda state: bool(task.is_solved(state.task_state)))

    def role(self, name: str) -> Role:
        for r in self.roles:
            if r.name == name:
                return r
        raise ValueError(f"harness {self.name!r} has no role {name!r}; roles: {self.role_names}")

    def reset(self, instance: Any) -> TeamState:
        return TeamState(task_state=self.task.initial_state(instance))

    def prompt(self, state: TeamState, role: str) -> str:
        return self.role(role).prompt(state)

    async def act(self, state: TeamState, role: str, text: str) -> Outcome:
        """`act_sync`, awaitable: a role whose apply blocks (runs a program) runs in the tool
        pool, so the K candidates of every problem in a step run their tools at once."""
        if getattr(self.role(role), "blocking", False):
            return await asyncio.get_running_loop().run_in_executor(tool_pool(), self.act_sync, state, role, text)
        return self.act_sync(state, role, text)

    def act_sync(self, state: TeamState, role: str, text: str) -> Outcome:
        """Apply one role's response text to `state` (which is not modified)."""
        if state.done:
            raise ValueError("act() on a finished episode")
        r = self.role(role)
        parsed = r.parse(text)
        new, local, info = r.apply(state, parsed)
        if not parsed.ok:
            local = self.parse_penalty
            info = {**info, "parse_error": parsed.error}
        solved = bool(self.task.is_solved(new.task_state))
        stop = self.stop(new)
        if role == self.role_names[-1]:  # the turn ends with the last role
            new = replace(new, turn=new.turn + 1, tool_output=None)
        done = stop or new.turn >= self.max_turns
        new = replace(new, done=done)
        return Outcome(new, float(local), 1.0 if solved else 0.0, parsed.ok, solved, info)


def never(state: TeamState) -> bool:
    """The stop rule of a team that observes nothing that ends its episode early."""
    return False


def no_tool(family: str) -> Rule:
    """The rule of `tool` in a family whose team has no choice of tool: it is a family option
    because a model config may set it (conf/model/qwen3_*.yaml: the planning tool agent writes a
    program) and an experiment of this family pins it to null; any other value is refused rather
    than ignored."""
    return Rule(type(None), null=True, text=f"null (the {family} team has no choice of tool)")


Stop = Callable[[TeamState], bool]
# (task, instructions, **the family options given) -> (roles in turn order, stop rule; None: the task solved)
Team = Callable[..., tuple[list[Role], Stop | None]]
# every family reads these: option -> its values (marl.checks' rules; an option not given takes the family's default)
COMMON_OPTIONS = {"max_turns": Int(1), "instructions": FLAG, "parse_penalty": Num()}


@dataclass(frozen=True)
class Family:
    """A harness family: the teams (`single`, `mas`) of the tasks it serves and the options it
    reads (conf/family/<name>.yaml). A harness config of the family holds COMMON_OPTIONS and
    `options`, nothing else: any other option, or a value its rule does not allow, is refused
    with what is allowed, never ignored. Each team gives its own defaults for the options it is
    not given."""

    name: str                 # planning, code, maths: named in errors
    teams: dict[str, Team]    # harness name -> its team
    options: dict[str, Rule]  # the family's own options and their values
    max_turns: int = 4        # the family's default

    def check_options(self, kwargs: dict) -> None:
        """Refuse an option this family does not read, naming the allowed ones, or a value its rule
        does not allow (`harness.<option>=<value>; allowed: <what>`, marl.checks' form); nothing is
        built, so marl.config.run_settings calls it before the tiny model's build."""
        rules = {**COMMON_OPTIONS, **self.options}
        unknown = sorted(set(kwargs) - set(rules))
        if unknown:
            raise ValueError(f"unknown {self.name} harness option(s) {unknown}; allowed: {', '.join(rules)}")
        for key, value in kwargs.items():
            rule = rules[key]
            if not (rule.type_ok(value) and rule.value_ok(value)):
                raise ValueError(f"harness.{key}={value!r}; allowed: {rule.allowed()}")


_FAMILIES: dict[str, Family] = {}


def register_team(task_name: str, family: Family) -> None:
    """Serve a task with a family's harnesses (one family per task)."""
    if task_name in _FAMILIES:
        raise ValueError(f"task {task_name!r} already has the {_FAMILIES[task_name].name} harnesses")
    _FAMILIES[task_name] = family


def harness_family(task_name: str) -> Family | None:
    return _FAMILIES.get(task_name)


def harness_names(task_name: str) -> list[str]:
    """Every harness registered for a task (the tiny model is warm-started in all of them)."""
    return sorted(_FAMILIES[task_name].teams) if task_name in _FAMILIES else []


def teams() -> list[tuple[str, str]]:
    """Every registered (task, harness) pair."""
    return sorted((t, h) for t, f in _FAMILIES.items() for h in f.teams)


def make_harness(task: Any, name: str, **kwargs: Any) -> Harness:
    family = _FAMILIES.get(task.name)
    if family is None or name not in family.teams:
        raise ValueError(f"unknown harness {name!r} for task {task.name!r}; available: {harness_names(task.name)}")
    family.check_options(kwargs)
    options = {k: v for k, v in kwargs.items() if k in family.options}
    roles, stop = family.teams[name](task, kwargs.get("instructions", False), **options)
    return Harness(name, task, roles, kwargs.get("max_turns", family.max_turns), kwargs.get("parse_penalty", -0.5),
                   stop=stop)
