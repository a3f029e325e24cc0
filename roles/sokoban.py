"""Sokoban's board: the room as text, the move-list action and the goal tool.

The room reads as rows of '#' wall, '.' floor, '@' the player ('+' on the target), '$' the box
and 'O' the target; then the last attempt, and (`positions`, on in the tiny default) a line with
the cells of '@', '$' and 'O'. Roles, turn order and rewards are the shared planning harnesses'
(roles/planning.py).

Tools: `goal` (tiny default): the tool agent names the target cell as "row col"; the solver
returns the shortest moves pushing the box onto that cell ("none" if it cannot get there).
`program`: the tool agent writes a program that prints the moves.
"""
from __future__ import annotations

import random

from envs.grid import Cell, moved
from envs.sokoban import SokobanState, simulate, solve
from roles.base import register_team
from roles.planning import MoveBoard, planning_family
from roles.text import manhattan_walk, random_moves, render_rows

_BACK = {"U": "D", "D": "U", "L": "R", "R": "L"}


def render_room(s: SokobanState, coords: bool = False) -> str:
    room = s.room

    def char(r: int, c: int) -> str:
        cell = (r, c)
        if cell in room.walls:
            return "#"
        if cell == s.box:
            return "*" if cell == room.target else "$"
        if cell == s.player:
            return "+" if cell == room.target else "@"
        return "O" if cell == room.target else "."
    return render_rows(room.size, char, coords)


def naive_pushes(player: Cell, box: Cell, target: Cell) -> list[str]:
    """Push the box straight at the target, rows first, then columns: for each axis walk (walls
    and the box ignored) to the cell behind the box and push it the whole way."""
    moves: list[str] = []
    for axis in (0, 1):
        delta = target[axis] - box[axis]
        if not delta:
            continue
        d = ("D" if delta > 0 else "U") if axis == 0 else ("R" if delta > 0 else "L")
        moves += manhattan_walk(player, moved(box, _BACK[d])) + [d] * abs(delta)
        box = (target[0], box[1]) if axis == 0 else (box[0], target[1])
        player = moved(box, _BACK[d])
    return moves


class SokobanBoard(MoveBoard):
    instructions = {
        "plan": ("You are '@' in the room below ('#' wall, '$' box, 'O' target). Walking into the box "
                 "pushes it. Push the box onto the target: answer with the list of moves, each one of "
                 "U D L R, e.g. [\"R\", \"D\"]."),
        "goal": ("Give the row and column (from 0) of the target 'O' in the room below; a solver will "
                 "push the box there."),
        "program": ("Write a Python program in a ```python block that prints the shortest list of moves "
                    "(U D L R) for '@' to push the box '$' onto 'O' in the room below ('#' is a wall)."),
    }
    render = staticmethod(render_room)

    def positions_line(self, s: SokobanState) -> str:
        t = s.room.target
        return f"@ {s.player[0]} {s.player[1]} $ {s.box[0]} {s.box[1]} O {t[0]} {t[1]}"

    def naive_action(self, s: SokobanState):
        """Straight pushes ignoring walls: right when the room is open on the way."""
        return naive_pushes(s.player, s.box, s.room.target)

    def noise_action(self, s: SokobanState, rng: random.Random):
        """A random short move list that leaves the box able to reach the target (so the oracle
        can go on from the state it makes); an unparsable empty answer if 10 draws all do not."""
        for _ in range(10):
            moves = random_moves(rng)
            (player, box), _, _ = simulate(s.room, s.player, s.box, moves, stop_on_target=False)
            if solve(s.room, player, box, s.room.target) is not None:
                return moves
        return []

    def query(self, s: SokobanState):
        return s.room.target

    def path_to(self, s: SokobanState, cell):
        return solve(s.room, s.player, s.box, cell)

    def program(self, s: SokobanState) -> str:
        return "```python\n" + _PROGRAM.format(grid=render_room(s).splitlines()) + "```"


_PROGRAM = """from collections import deque
g = {grid!r}
find = lambda chs: next((r, c) for r, row in enumerate(g) for c, ch in enumerate(row) if ch in chs)
player, box, target = find('@+'), find('$*'), find('O+*')
step = {{'U': (-1, 0), 'D': (1, 0), 'L': (0, -1), 'R': (0, 1)}}
free = lambda x: g[x[0]][x[1]] != '#'
start = (player, box)
prev, q = {{start: None}}, deque([start])
while q:
    p, b = s = q.popleft()
    if b == target:
        break
    for m, (dr, dc) in step.items():
        x = (p[0] + dr, p[1] + dc)
        if not free(x):
            continue
        nb = b
        if x == b:
            nb = (b[0] + dr, b[1] + dc)
            if not free(nb):
                continue
        if (x, nb) not in prev:
            prev[(x, nb)] = (s, m)
            q.append((x, nb))
path = []
while prev[s]:
    s, m = prev[s]
    path.append(m)
print(' '.join(reversed(path)))
"""

register_team("sokoban", planning_family(SokobanBoard))
