"""The planning harnesses, shared by every board task (Plan-Path, Sokoban, Sudoku):

- `single`: one plan agent emits the action; from turn 2 it sees the result of its last attempt;
- `mas`: each turn a tool agent calls a tool, then the plan agent, which also sees the tool's
  output, emits the action that advances the task.

What differs per task is a `Board` (roles/<task>.py): how a state reads as text, the action
language, the tool's query language and the tool itself, and the demonstrators (oracle, naive,
noise) the tiny model's warm start is made from. A new task is a task module (envs/) plus a board
and one line, `register_team(<task>, planning_family(<Board>))`; the roles, turn order and rewards
below are not copied. The family's options (`options`, conf/family/planning.yaml) reach only the
planning tasks.

Tools (`tool=`), one role class each: a board's query tools (`QueryToolRole`, `board.query_tools`;
the tool agent's answer is a query, e.g. the goal cell, and the board's solver answers it: reading
the query off the board is the tool agent's skill; a move list can be printed in a fixed-width
field, `field`, see `MoveBoard.answer`), or `program` (`ProgramToolRole`, the paper's variant, for
Qwen3-sized models: the tool agent writes a Python program whose printed output is shown; it runs
in marl's sandbox, `sandbox.run_program`).

Local rewards: plan agent, the task reward of its own step; tool agent, 1.0 if the tool's output,
read as an action and applied to the current state, solves the task, else 0.0.

Invariant: board task states are frozen dataclasses with `steps` (int) and `history` (tuple of
str, one line per attempt) fields; an unparsable plan is recorded there and changes nothing else.
"""
from __future__ import annotations

import random
import re
import string
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Any, Protocol

from marl.checks import FLAG, Int, Num, OneOf, Rule
from roles.base import Family, Parsed, TeamState
from roles.text import CODE, format_cell, head, format_moves, parse_cell, parse_moves, random_moves
import sandbox

_FILLER = re.compile(r"(\s+\.)+\s*$")  # a fixed-width answer's trailing " . . ."


class Board(Protocol):
    task: Any
    query_tools: tuple[str, ...]  # the tool names besides "program"; the first is the default
    instructions: dict[str, str]  # task statement per role ("plan") and per tool, for chat models

    def context(self, s) -> str: ...  # the state as text, ending with its last line
    def parse_action(self, text: str) -> Parsed: ...
    def format_action(self, action) -> str: ...
    def naive_action(self, s): ...  # a plausible heuristic's action (right on easy states)
    def noise_action(self, s, rng: random.Random): ...  # a plausible wrong action
    def parse_query(self, text: str) -> Parsed: ...
    def format_query(self, query) -> str: ...
    def answer(self, s, tool: str, query) -> str: ...  # what a query tool prints
    def query(self, s): ...  # the oracle's query
    def naive_query(self, s): ...
    def noise_query(self, s, rng: random.Random): ...
    def program(self, s) -> str: ...  # the oracle's program (program tool), a ```python block
    def naive_program(self, s) -> str: ...


class MoveBoard:
    """The half of a Board shared by tasks whose action is a move list (U D L R) and whose query
    tool takes a cell "row col" (Plan-Path, Sokoban). A subclass gives `render` (the grid),
    `positions_line`, `naive_action`, `query`, `path_to` (the query tool's solver), `program` and
    its `instructions`."""

    query_tools = ("goal",)

    def __init__(self, task, coords: bool = False, positions: bool = False, numbered: bool = False,
                 field: int | None = 0):
        self.task, self.coords, self.positions, self.numbered = task, coords, positions, numbered
        self.field = field or 0  # None (an unbounded task's interpolated width) = no field

    def context(self, s) -> str:
        lines = [self.render(s, self.coords)]
        if s.history:
            lines.append(f"last: {s.history[-1]}")
        if self.positions:  # the cells that matter in words, so no role has to count columns;
            # last, so the tool agent's answer sits at a fixed distance from the digits it copies
            lines.append(self.positions_line(s))
        return "\n".join(lines)

    def parse_action(self, text: str) -> Parsed:
        if self.field:  # the filler of a fixed-width tool answer is not a move (see `answer`)
            text = _FILLER.sub("", text)
        return parse_moves(text, max_moves=4 * self.task.size ** 2)

    def format_action(self, moves) -> str:
        return format_moves(moves, self.numbered)

    def noise_action(self, s, rng: random.Random):
        return random_moves(rng)

    def parse_query(self, text: str) -> Parsed:
        return parse_cell(text)

    def format_query(self, cell) -> str:
        return format_cell(cell)

    def answer(self, s, tool: str, cell) -> str:
        """The moves to the queried cell. With `field` > 0 they are printed in a field of that
        many moves, filled with '.': the i-th move then always sits at the same distance from the
        plan agent's i-th move, so a small model can copy the answer by position. Without it the
        distance grows with the answer's length, and a 4-layer model copies long answers poorly
        (BENCHMARKS.md, Choices in the tiny default). "none", "here" and answers longer than the
        field print as they are."""
        path = self.path_to(s, tuple(cell))
        if path is None:
            return "none"
        if not path:
            return "here"
        return " ".join([format_moves(path, self.numbered)] + ["."] * (self.field - len(path)))

    def naive_query(self, s):
        """The query cell read transposed ("col row"): right only on the diagonal."""
        r, c = self.query(s)
        return c, r

    def noise_query(self, s, rng: random.Random):
        n = self.task.size
        return rng.randrange(n), rng.randrange(n)

    def naive_program(self, s) -> str:
        """A program that prints the naive demonstrator's moves."""
        return "```python\nprint(" + repr(format_moves(self.naive_action(s))) + ")\n```"


class PlanRole:
    """Emits the action that advances the task. In the team it also sees the tool's output."""

    def __init__(self, board: Board, sees_tool: bool, instructions: bool):
        self.name, self.board, self.task = "plan", board, board.task
        self.sees_tool, self.instructions = sees_tool, instructions

    def prompt(self, state: TeamState) -> str:
        tool = f"\ntool: {state.tool_output}" if self.sees_tool and state.tool_output is not None else ""
        intro = head(self.instructions, self.board.instructions["plan"])
        return f"{intro}{self.board.context(state.task_state)}{tool}\nplan:"

    def parse(self, text: str) -> Parsed:
        return self.board.parse_action(text)

    def apply(self, state: TeamState, parsed: Parsed):
        if not parsed.ok:
            s = state.task_state
            s = replace(s, steps=s.steps + 1, history=s.history + ("(unparsable)",))
            return replace(state, task_state=s), 0.0, {}
        res = self.task.step(state.task_state, parsed.action)
        return replace(state, task_state=res.state), res.reward, {"terms": res.terms}

    def demo(self, state: TeamState) -> str:
        return self.board.format_action(self.task.oracle(state.task_state))

    def naive(self, state: TeamState) -> str:
        return self.board.format_action(self.board.naive_action(state.task_state))

    def noise(self, state: TeamState, rng: random.Random) -> str:
        """A plausible wrong action: warm-start data uses it to reach states with a history."""
        return self.board.format_action(self.board.noise_action(state.task_state, rng))


class _ToolRole(ABC):
    """Calls the tool; its output is shown to the plan agent of the same turn. A subclass gives
    the tool's kind: how the call is read, run and demonstrated."""

    name = "tool"
    tool: str

    def __init__(self, board: Board, instructions: bool):
        self.board, self.task, self.instructions = board, board.task, instructions

    def prompt(self, state: TeamState) -> str:
        intro = head(self.instructions, self.board.instructions[self.tool])
        return f"{intro}{self.board.context(state.task_state)}\n{self.tool}:"

    @abstractmethod
    def run_tool(self, state: TeamState, action) -> str:
        """What the tool prints for the parsed call `action`."""

    def apply(self, state: TeamState, parsed: Parsed):
        out = self.run_tool(state, parsed.action) if parsed.ok else "error: unparsable call"
        action = self.board.parse_action(out)
        good = action.ok and self.task.step(state.task_state, action.action).solved
        return replace(state, tool_output=out), 1.0 if good else 0.0, {"tool_output": out}


class QueryToolRole(_ToolRole):
    """Names a query (e.g. the goal cell) that one of the board's query tools answers."""

    blocking = False

    def __init__(self, board: Board, tool: str, instructions: bool):
        super().__init__(board, instructions)
        self.tool = tool

    def parse(self, text: str) -> Parsed:
        return self.board.parse_query(text)

    def run_tool(self, state: TeamState, query) -> str:
        return self.board.answer(state.task_state, self.tool, query)

    def demo(self, state: TeamState) -> str:
        return self.board.format_query(self.board.query(state.task_state))

    def naive(self, state: TeamState) -> str:
        return self.board.format_query(self.board.naive_query(state.task_state))

    def noise(self, state: TeamState, rng: random.Random) -> str:
        """A plausible but wrong call, so warm-start data shows the plan agent bad tool output."""
        return self.board.format_query(self.board.noise_query(state.task_state, rng))


class ProgramToolRole(_ToolRole):
    """Writes a Python program whose printed output (its last 300 characters, printable ones
    only) is the tool's output; it runs in marl's sandbox."""

    tool = "program"
    blocking = True  # a program runs in a child process: off the event loop

    def __init__(self, board: Board, instructions: bool, timeout_s: float = 2.0):
        super().__init__(board, instructions)
        self.timeout_s = timeout_s
        sandbox.check_available()  # refuse at build time, before a run starts, if it cannot be isolated

    def parse(self, text: str) -> Parsed:
        blocks = CODE.findall(text)
        return Parsed(True, blocks[-1]) if blocks else Parsed(False, error="no ```python block")

    def run_tool(self, state: TeamState, program: str) -> str:
        result = sandbox.run_program(program, sandbox.Limits(timeout_s=self.timeout_s))
        out = result.out.strip()[-300:] if result.ok else f"error: {error_line(result)}"
        return "".join(ch for ch in out if ch in string.printable)  # observations stay plain text

    def demo(self, state: TeamState) -> str:
        return self.board.program(state.task_state)

    def naive(self, state: TeamState) -> str:
        return self.board.naive_program(state.task_state)

    def noise(self, state: TeamState, rng: random.Random) -> str:
        return "print('?')"


def tool_role(board: Board, tool: str, instructions: bool, timeout_s: float) -> _ToolRole:
    """The tool agent calling `tool`: one of the board's query tools, or `program`."""
    allowed = (*board.query_tools, "program")
    if tool not in allowed:
        raise ValueError(f"unknown {board.task.name} tool {tool!r}; allowed: {', '.join(allowed)}")
    if tool == "program":
        return ProgramToolRole(board, instructions, timeout_s)
    return QueryToolRole(board, tool, instructions)


def error_line(r: sandbox.Result) -> str:
    """A failed run in one line: the exception's last line, else the status ("timeout", ...)."""
    last = r.err.strip().splitlines()[-1:] if r.status == "error" else []
    return last[0][:200] if last else r.status


def options(board_cls) -> dict[str, Rule]:
    """The family's options (conf/family/planning.yaml) and their values, for the board's task.
    `field` is a build-time setting of the tiny model (marl/tiny.py), so a bad one is refused
    before a minutes-long build starts; null: no field (an unbounded task's interpolated width)."""
    return {"tool": OneOf(*board_cls.query_tools, "program", null=True),  # null: the board's first query tool
            "tool_timeout_s": Num(0, lo_open=True), "coords": FLAG, "positions": FLAG, "numbered": FLAG,
            "field": Int(0, null=True)}


def planning_family(board_cls) -> Family:
    """The planning harnesses over the board `board_cls(task, **view)`, where view is the family's
    rendering options (coords, positions, numbered, field; each board's defaults where not given)."""

    def single(task, instructions: bool, tool: str | None = None, tool_timeout_s: float = 2.0, **view):
        del tool, tool_timeout_s  # the single agent has no tool; the family's options serve both teams
        return [PlanRole(board_cls(task, **view), False, instructions)], None

    def mas(task, instructions: bool, tool: str | None = None, tool_timeout_s: float = 2.0, **view):
        board = board_cls(task, **view)
        return [tool_role(board, tool or board.query_tools[0], instructions, tool_timeout_s),
                PlanRole(board, True, instructions)], None

    return Family("planning", {"single": single, "mas": mas}, options(board_cls), max_turns=4)
