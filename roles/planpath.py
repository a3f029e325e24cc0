"""Plan-Path's board: how the grid reads as text, the move-list action and the goal tool.

Prompts are plain text built from the grid ('#' wall, '.' free, '@' the agent, 'G' the goal),
the last executed attempt, optionally a line with the cells of '@' and 'G' (`positions`, on in
the tiny default: reading a cell is then copying two digits, not counting columns), and for the
plan agent of the team the tool's output this turn. Roles, turn order and rewards are the shared
planning harnesses' (roles/planning.py).

Tools: `goal` (tiny default): the tool agent names the goal cell as "row col"; a BFS tool returns
the shortest moves from '@' to that cell ("none" if it cannot be reached). `program`: the tool
agent writes a program that prints the moves.
"""
from __future__ import annotations

import random

from envs.planpath import PlanPath, PlanPathState, bfs_path
from roles.base import Parsed
from roles.planning import register_harnesses
from roles.text import format_cell, format_moves, manhattan_walk, parse_cell, parse_moves, random_moves, render_rows


def render_grid(s: PlanPathState, coords: bool = False) -> str:
    g = s.grid
    return render_rows(g.size, lambda r, c: "@" if (r, c) == s.pos else "#" if (r, c) in g.walls
                       else "G" if (r, c) == g.goal else ".", coords)


class PlanPathBoard:
    query_tools = ("goal",)
    instructions = {
        "plan": ("You move '@' to 'G' on the grid below ('#' is a wall). Answer with the list of "
                 "moves, each one of U D L R, e.g. [\"R\", \"D\"]."),
        "goal": "Give the row and column (from 0) of 'G' on the grid below; a tool will find a path there.",
        "program": ("Write a Python program in a ```python block that prints the shortest list of moves "
                    "(U D L R) taking '@' to 'G' on the grid below ('#' is a wall)."),
    }

    def __init__(self, task: PlanPath, coords: bool = False, positions: bool = False, numbered: bool = False):
        self.task, self.coords, self.positions, self.numbered = task, coords, positions, numbered

    def context(self, s: PlanPathState) -> str:
        lines = [render_grid(s, self.coords)]
        if s.history:
            lines.append(f"last: {s.history[-1]}")
        if self.positions:  # the cells of '@' and 'G' in words, so no role has to count columns;
            # last, so the tool agent's answer sits at a fixed distance from the digits it copies
            lines.append(f"@ {s.pos[0]} {s.pos[1]} G {s.grid.goal[0]} {s.grid.goal[1]}")
        return "\n".join(lines)

    def parse_action(self, text: str) -> Parsed:
        return parse_moves(text, max_moves=4 * self.task.size ** 2)

    def format_action(self, moves) -> str:
        return format_moves(moves, self.numbered)

    def naive_action(self, s: PlanPathState):
        """Walk rows first, then columns, straight at 'G', ignoring walls and the tool. Right
        whenever that L-shaped walk is clear."""
        return manhattan_walk(s.pos, s.grid.goal)

    def noise_action(self, s: PlanPathState, rng: random.Random):
        return random_moves(rng)

    def parse_query(self, text: str) -> Parsed:
        return parse_cell(text)

    def format_query(self, cell) -> str:
        return format_cell(cell)

    def answer(self, s: PlanPathState, tool: str, cell) -> str:
        path = bfs_path(s.grid, s.pos, cell)
        return "none" if path is None else format_moves(path, self.numbered) or "here"

    def query(self, s: PlanPathState):
        return s.grid.goal

    def naive_query(self, s: PlanPathState):
        """G's coordinates read transposed ("col row"): right only on the diagonal."""
        return s.grid.goal[1], s.grid.goal[0]

    def noise_query(self, s: PlanPathState, rng: random.Random):
        n = self.task.size
        return rng.randrange(n), rng.randrange(n)

    def program(self, s: PlanPathState) -> str:
        return "```python\n" + _PROGRAM.format(grid=render_grid(s).splitlines()) + "```"

    def naive_program(self, s: PlanPathState) -> str:
        """Prints the L-shaped walk that ignores walls."""
        return "```python\nprint(" + repr(format_moves(manhattan_walk(s.pos, s.grid.goal))) + ")\n```"


_PROGRAM = """from collections import deque
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

register_harnesses("planpath", PlanPathBoard)
