"""Grid geometry shared by the grid tasks (Plan-Path, Sokoban): cells, the four moves, and the two
things done with a move rule: running a move list (`run_moves`) and finding a shortest one (`bfs`).

A move rule is `step(state, move) -> next state, or None if the move is illegal`; the state is
whatever the task tracks (Plan-Path: the agent's cell; Sokoban: the (player, box) cells).
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Hashable, Iterable, TypeVar

Cell = tuple[int, int]
MOVES: dict[str, Cell] = {"U": (-1, 0), "D": (1, 0), "L": (0, -1), "R": (0, 1)}
S = TypeVar("S", bound=Hashable)


def moved(cell: Cell, move: str) -> Cell:
    """The neighbour of `cell` in direction `move` (one of MOVES)."""
    dr, dc = MOVES[move]
    return cell[0] + dr, cell[1] + dc


def grid_key(task: str, n: int, char) -> str:
    """Canonical content string of an n x n grid whose cell (r, c) reads `char(r, c)`."""
    return f"{task}:" + "/".join("".join(char(r, c) for c in range(n)) for r in range(n))


class Walled:
    """Mixin for an n x n grid dataclass with `size` and `walls` fields: which cells can be entered."""

    def free(self, cell: Cell) -> bool:
        r, c = cell
        return 0 <= r < self.size and 0 <= c < self.size and cell not in self.walls

    def walk(self, cell: Cell, move: str) -> Cell | None:
        """The cell one `move` from `cell`, or None if that is a wall or off the grid (a move rule)."""
        nxt = moved(cell, move)
        return nxt if self.free(nxt) else None


def run_moves(state: S, moves: Iterable[str], step: Callable[[S, str], S | None],
              done: Callable[[S], bool] = lambda s: False) -> tuple[S, int, bool]:
    """Apply `moves` in order: (end state, moves made, hit an illegal move). Stops before a move
    once `done(state)`, and at the first illegal move, which is not made. Raises ValueError on a
    move not in MOVES."""
    executed = 0
    for m in moves:
        if done(state):
            break
        if m not in MOVES:
            raise ValueError(f"unknown move {m!r}; allowed: {', '.join(MOVES)}")
        nxt = step(state, m)
        if nxt is None:
            return state, executed, True
        state, executed = nxt, executed + 1
    return state, executed, False


def bfs(start: S, step: Callable[[S, str], S | None], is_goal: Callable[[S], bool]) -> list[str] | None:
    """A shortest move list from `start` to a state where `is_goal` holds, or None if none is
    reachable. Moves are tried in the fixed order of MOVES (U, D, L, R) and a state keeps the
    first path that reaches it, so the path returned is deterministic, not just its length."""
    prev: dict[S, tuple[S, str] | None] = {start: None}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        if is_goal(state):
            path: list[str] = []
            while prev[state] is not None:
                state, move = prev[state]  # type: ignore[misc]
                path.append(move)
            return path[::-1]
        for move in MOVES:
            nxt = step(state, move)
            if nxt is not None and nxt not in prev:
                prev[nxt] = (state, move)
                queue.append(nxt)
    return None
