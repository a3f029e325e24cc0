"""Plan-Path roles: the plan agent (emits moves; its action advances the task) and the tool agent.

Prompts are plain text built from the grid ('#' wall, '.' free, '@' the agent, 'G' the goal),
the last executed attempt, optionally a line with the cells of '@' and 'G' (`positions`, on in
the tiny default: reading a cell is then copying two digits, not counting columns), and for the
plan agent of the team the tool's output this turn.
`instructions=True` prepends a natural-language task statement (for pretrained chat models);
the tiny model is trained on the bare format.

Tool variants (`tool=`):
- `goal`: the tool agent names the goal cell as "row col"; a BFS tool returns the shortest moves
  from '@' to that cell. Reading the goal off the grid is the tool agent's skill; the plan agent
  must use the tool's answer (or plan by itself when it is wrong).
- `program` (the paper's variant, for Qwen3-sized models): the tool agent writes a Python program
  whose printed output is shown to the plan agent; it runs under `roles.tools.run_program`.

Local rewards: plan agent, the task reward of its own step; tool agent, 1.0 if the tool output,
read as moves and run from '@', reaches the goal, else 0.0.
"""
from __future__ import annotations

import random
import re
import string
from dataclasses import replace

from envs.planpath import MOVES, PlanPath, PlanPathState, bfs_path, simulate
from roles.base import Harness, Parsed, TeamState, register_harness
from roles.tools import run_program

_WORDS = {"u": "U", "up": "U", "d": "D", "down": "D", "l": "L", "left": "L", "r": "R", "right": "R"}
_LABEL = re.compile(r"^\s*[A-Za-z ]{0,20}:\s*")
_INDEX = re.compile(r"^\d{1,3}(?=[A-Za-z])")  # a numbered item's index: "12R" -> "R"
_CODE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)


def render_grid(s: PlanPathState, coords: bool = False) -> str:
    """Rows of the grid; with coords, a header of column numbers and each row led by its number
    (digits mod 10), so reading a cell's coordinates is a lookup rather than a count."""
    g = s.grid
    rows = [" " + "".join(str(c % 10) for c in range(g.size))] if coords else []
    for r in range(g.size):
        cells = "".join("@" if (r, c) == s.pos else "#" if (r, c) in g.walls
                        else "G" if (r, c) == g.goal else "." for c in range(g.size))
        rows.append(f"{r % 10}{cells}" if coords else cells)
    return "\n".join(rows)


def format_moves(moves, numbered: bool = False) -> str:
    """"R R D", or numbered "1R 2R 3D": each move led by its index, so copying a move list is a
    lookup (the move after "3" in the source) rather than counting along runs of equal moves."""
    return " ".join(f"{i}{m}" for i, m in enumerate(moves, 1)) if numbered else " ".join(moves)


def manhattan_walk(src, dst) -> list[str]:
    """Vertical moves then horizontal ones from src to dst, walls ignored."""
    dr, dc = dst[0] - src[0], dst[1] - src[1]
    return ["D" if dr > 0 else "U"] * abs(dr) + ["R" if dc > 0 else "L"] * abs(dc)


def parse_moves(text: str, max_moves: int = 200) -> Parsed:
    """Moves from the last bracketed list in `text`, else from its last non-empty line.
    Items are U/D/L/R or up/down/left/right (any case), separated by spaces, commas or quotes,
    each optionally led by its index ("1R 2D"); the indices are not checked."""
    try:
        lists = re.findall(r"\[([^\[\]]*)\]", text)
        if lists:
            body = lists[-1]
        else:
            lines = [ln for ln in text.strip().splitlines() if ln.strip()]
            body = _LABEL.sub("", lines[-1]) if lines else ""
        items = [w for w in re.split(r"[\s,\"'`]+", body) if w]
        if not items:
            return Parsed(False, error="no moves found")
        moves = [_WORDS.get(_INDEX.sub("", w).lower()) for w in items]
        if None in moves:
            bad = items[moves.index(None)]
            return Parsed(False, error=f"not a move: {bad[:20]!r} (allowed U D L R)")
        if len(moves) > max_moves:
            return Parsed(False, error=f"{len(moves)} moves, more than the limit {max_moves}")
        return Parsed(True, tuple(moves))
    except Exception as e:  # a parser must never take the run down; count it as a failure
        return Parsed(False, error=f"parser error: {type(e).__name__}")


def parse_cell(text: str) -> Parsed:
    nums = re.findall(r"-?\d+", text.strip().splitlines()[-1] if text.strip() else "")
    if len(nums) != 2:
        return Parsed(False, error="expected two integers 'row col'")
    if any(len(n) > 7 for n in nums):  # int() refuses > 4300 digits; never raise
        return Parsed(False, error="cell out of range")
    r, c = int(nums[0]), int(nums[1])
    if abs(r) > 10_000 or abs(c) > 10_000:
        return Parsed(False, error="cell out of range")
    return Parsed(True, (r, c))


def _context(state: TeamState, coords: bool, positions: bool = False) -> str:
    s: PlanPathState = state.task_state
    lines = [render_grid(s, coords)]
    if s.history:
        lines.append(f"last: {s.history[-1]}")
    if positions:  # the cells of '@' and 'G' in words, so no role has to count columns; last, so
        # the tool agent's answer sits at a fixed distance from the digits it copies
        lines.append(f"@ {s.pos[0]} {s.pos[1]} G {s.grid.goal[0]} {s.grid.goal[1]}")
    return "\n".join(lines)


class PlanRole:
    """Emits the move list that advances the task. In the team it also sees the tool's output."""

    def __init__(self, task: PlanPath, sees_tool: bool, instructions: bool, coords: bool = False,
                 positions: bool = False, numbered: bool = False):
        self.name, self.task, self.sees_tool, self.instructions = "plan", task, sees_tool, instructions
        self.coords, self.positions, self.numbered = coords, positions, numbered

    def prompt(self, state: TeamState) -> str:
        head = ""
        if self.instructions:
            head = ("You move '@' to 'G' on the grid below ('#' is a wall). Answer with the list of "
                    "moves, each one of U D L R, e.g. [\"R\", \"D\"].\n")
        tool = f"\ntool: {state.tool_output}" if self.sees_tool and state.tool_output is not None else ""
        return f"{head}{_context(state, self.coords, self.positions)}{tool}\nplan:"

    def parse(self, text: str) -> Parsed:
        return parse_moves(text, max_moves=4 * self.task.size ** 2)

    def apply(self, state: TeamState, parsed: Parsed):
        if not parsed.ok:
            s = state.task_state
            s = replace(s, steps=s.steps + 1, history=s.history + ("(unparsable)",))
            return replace(state, task_state=s), 0.0, {}
        res = self.task.step(state.task_state, parsed.action)
        return replace(state, task_state=res.state), res.reward, {"terms": res.terms}

    def demo(self, state: TeamState) -> str:
        return format_moves(self.task.oracle(state.task_state), self.numbered)

    def naive(self, state: TeamState) -> str:
        """The naive demonstrator: walk rows first, then columns, straight at 'G', ignoring walls
        and the tool. Right whenever that L-shaped walk is clear."""
        s: PlanPathState = state.task_state
        return format_moves(manhattan_walk(s.pos, s.grid.goal), self.numbered)

    def noise(self, state: TeamState, rng: random.Random) -> str:
        """A random short move list: warm-start data uses it to reach states with a history."""
        return format_moves([rng.choice("UDLR") for _ in range(rng.randint(1, 3))], self.numbered)


class ToolRole:
    """Calls the tool; its output is shown to the plan agent of the same turn."""

    def __init__(self, task: PlanPath, tool: str, instructions: bool, timeout_s: float = 2.0,
                 coords: bool = False, positions: bool = False, numbered: bool = False):
        if tool not in ("goal", "program"):
            raise ValueError(f"unknown planpath tool {tool!r}; allowed: goal, program")
        self.name, self.task, self.tool = "tool", task, tool
        self.instructions, self.timeout_s, self.coords = instructions, timeout_s, coords
        self.positions, self.numbered = positions, numbered

    def prompt(self, state: TeamState) -> str:
        head = ""
        if self.instructions and self.tool == "goal":
            head = "Give the row and column (from 0) of 'G' on the grid below; a tool will find a path there.\n"
        elif self.instructions:
            head = ("Write a Python program in a ```python block that prints the shortest list of moves "
                    "(U D L R) taking '@' to 'G' on the grid below ('#' is a wall).\n")
        return f"{head}{_context(state, self.coords, self.positions)}\n{'goal' if self.tool == 'goal' else 'program'}:"

    def parse(self, text: str) -> Parsed:
        if self.tool == "goal":
            return parse_cell(text)
        blocks = _CODE.findall(text)
        return Parsed(True, blocks[-1]) if blocks else Parsed(False, error="no ```python block")

    def run_tool(self, state: TeamState, action) -> str:
        s: PlanPathState = state.task_state
        if self.tool == "goal":
            path = bfs_path(s.grid, s.pos, action)
            return "none" if path is None else format_moves(path, self.numbered) or "here"
        result = run_program(action, timeout_s=self.timeout_s)
        out = result.stdout.strip()[-300:] if result.ok else f"error: {result.error}"
        return "".join(ch for ch in out if ch in string.printable)  # observations stay plain text

    def apply(self, state: TeamState, parsed: Parsed):
        out = self.run_tool(state, parsed.action) if parsed.ok else "error: unparsable call"
        s: PlanPathState = state.task_state
        moves = parse_moves(out)
        good = moves.ok and simulate(s.grid, s.pos, moves.action)[0] == s.grid.goal
        return replace(state, tool_output=out), 1.0 if good else 0.0, {"tool_output": out}

    def demo(self, state: TeamState) -> str:
        s: PlanPathState = state.task_state
        if self.tool == "goal":
            return f"{s.grid.goal[0]} {s.grid.goal[1]}"
        return "```python\n" + _PROGRAM_DEMO.format(grid=render_grid(s).splitlines()) + "```"

    def naive(self, state: TeamState) -> str:
        """The naive demonstrator: reads G's coordinates transposed ("col row"); right only on the
        diagonal. The program variant prints the L-shaped walk that ignores walls."""
        s: PlanPathState = state.task_state
        if self.tool == "goal":
            return f"{s.grid.goal[1]} {s.grid.goal[0]}"
        return "```python\nprint(" + repr(format_moves(manhattan_walk(s.pos, s.grid.goal))) + ")\n```"

    def noise(self, state: TeamState, rng: random.Random) -> str:
        """A plausible but wrong call, so warm-start data shows the plan agent bad tool output."""
        n = self.task.size
        return f"{rng.randrange(n)} {rng.randrange(n)}" if self.tool == "goal" else "print('?')"


_PROGRAM_DEMO = """from collections import deque
g = {grid!r}
n = len(g)
find = lambda ch: next((r, c) for r in range(n) for c in range(n) if g[r][c] == ch)
src, dst = find('@'), find('G')
prev, q = {{src: None}}, deque([src])
step = {{'U': (-1, 0), 'D': (1, 0), 'L': (0, -1), 'R': (0, 1)}}
while q:
    r, c = q.popleft()
    for m, (dr, dc) in step.items():
        x = (r + dr, c + dc)
        if 0 <= x[0] < n and 0 <= x[1] < n and g[x[0]][x[1]] != '#' and x not in prev:
            prev[x] = ((r, c), m)
            q.append(x)
path, x = [], dst
while prev.get(x):
    x, m = prev[x]
    path.append(m)
print(' '.join(reversed(path)))
"""

assert set(MOVES) == {"U", "D", "L", "R"}


def single(task: PlanPath, max_turns: int = 4, instructions: bool = False, parse_penalty: float = -0.5,
           tool: str = "goal", tool_timeout_s: float = 2.0, coords: bool = False, positions: bool = False,
           numbered: bool = False):
    del tool, tool_timeout_s  # the single agent has no tool; accepted so one config serves both
    return Harness("single", task, [PlanRole(task, False, instructions, coords, positions, numbered)],
                   max_turns, parse_penalty)


def mas(task: PlanPath, max_turns: int = 4, instructions: bool = False, parse_penalty: float = -0.5,
        tool: str = "goal", tool_timeout_s: float = 2.0, coords: bool = False, positions: bool = False,
        numbered: bool = False):
    roles = [ToolRole(task, tool, instructions, tool_timeout_s, coords, positions, numbered),
             PlanRole(task, True, instructions, coords, positions, numbered)]
    return Harness("mas", task, roles, max_turns, parse_penalty)


register_harness("planpath", "single", single)
register_harness("planpath", "mas", mas)
