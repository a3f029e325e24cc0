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

from envs.planpath import PlanPathState, bfs_path
from roles.base import register_team
from roles.planning import MoveBoard, planning_family
from roles.text import manhattan_walk, render_rows


def render_grid(s: PlanPathState, coords: bool = False) -> str:
    g = s.grid
    return render_rows(g.size, lambda r, c: "@" if (r, c) == s.pos else "#" if (r, c) in g.walls
                       else "G" if (r, c) == g.goal else ".", coords)


class PlanPathBoard(MoveBoard):
    instructions = {
        "plan": ("You move '@' to 'G' on the grid below ('#' is a wall). Answer with the list of "
                 "moves, each one of U D L R, e.g. [\"R\", \"D\"]."),
        "goal": "Give the row and column (from 0) of 'G' on the grid below; a tool will find a path there.",
        "program": ("Write a Python program in a ```python block that prints the shortest list of moves "
                    "(U D L R) taking '@' to 'G' on the grid below ('#' is a wall)."),
    }
    render = staticmethod(render_grid)

    def positions_line(self, s: PlanPathState) -> str:
        return f"@ {s.pos[0]} {s.pos[1]} G {s.grid.goal[0]} {s.grid.goal[1]}"

    def naive_action(self, s: PlanPathState):
        """Walk rows first, then columns, straight at 'G', ignoring walls and the tool. Right
        whenever that L-shaped walk is clear."""
        return manhattan_walk(s.pos, s.grid.goal)

    def query(self, s: PlanPathState):
        return s.grid.goal

    def path_to(self, s: PlanPathState, cell):
        return bfs_path(s.grid, s.pos, cell)

    def program(self, s: PlanPathState) -> str:
        return "```python\n" + _PROGRAM.format(grid=render_grid(s).splitlines()) + "```"


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

register_team("planpath", planning_family(PlanPathBoard))
