"""Grid geometry shared by the grid tasks (Plan-Path, Sokoban): cells and the four moves."""
from __future__ import annotations

Cell = tuple[int, int]
MOVES: dict[str, Cell] = {"U": (-1, 0), "D": (1, 0), "L": (0, -1), "R": (0, 1)}


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
