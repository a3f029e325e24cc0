"""Sudoku's board: the puzzle as text, the full-grid action and the grid tool.

The prompt shows the puzzle (its givens: digits, '.' for an empty cell, one row per line), then
the last proposal and what it did. Answers are a full grid on one line, rows separated by spaces
("1234 3412 2143 4321"); '.' or 0 leaves a cell empty. Roles, turn order and rewards are the
shared planning harnesses' (roles/planning.py).

Tools: `grid` (tiny default): the tool agent copies the puzzle onto one line; a solver returns its
solution ("none" if the copy has no solution, "many" if more than one). Transcribing faithfully is
the tool agent's skill. `program`: the tool agent writes a program that prints the solution.

Rendering options: `coords` numbers rows and columns; `positions`, `numbered` and `field` have nothing to
act on here (no agent, no move list; the solution is a fixed-width grid already) and are accepted
so that one harness config serves all tasks.
"""
from __future__ import annotations

import random
import re

from envs.sudoku import Sudoku, SudokuState, count_solutions, rows_text
from roles.base import Parsed, register_team
from roles.planning import planning_family
from roles.text import LABEL, render_rows

_SEPARATORS = re.compile(r"[\s|,/\[\]\"'`]+")


def parse_grid(text: str, n: int) -> Parsed:
    """n*n cells read from the end of `text`: lines are taken from the last one up until they hold
    n*n cells; separators (spaces, | , / brackets, quotes) are skipped, labels ("plan:") dropped."""
    try:
        cells: list[str] = []
        for line in reversed([ln for ln in text.strip().splitlines() if ln.strip()]):
            cells = list(_SEPARATORS.sub("", LABEL.sub("", line))) + cells
            if len(cells) >= n * n:
                break
        if len(cells) != n * n:
            return Parsed(False, error=f"expected {n * n} cells (digits 1-{n}, '.' for empty), got {len(cells)}")
        digits = "123456789"[:n]
        bad = next((ch for ch in cells if ch not in digits and ch not in ".0"), None)
        if bad is not None:
            return Parsed(False, error=f"not a cell: {bad!r} (allowed digits 1-{n} and '.')")
        return Parsed(True, tuple(0 if ch in ".0" else int(ch) for ch in cells))
    except Exception as e:  # a parser must never take the run down; count it as a failure
        return Parsed(False, error=f"parser error: {type(e).__name__}")


def transpose(cells: tuple[int, ...], n: int) -> tuple[int, ...]:
    return tuple(cells[c * n + r] for r in range(n) for c in range(n))


class SudokuBoard:
    query_tools = ("grid",)
    instructions = {
        "plan": ("Solve the sudoku below ('.' is an empty cell): every row, column and box holds each "
                 "digit once. Answer with the full grid on one line, rows separated by spaces."),
        "grid": "Copy the sudoku below onto one line, rows separated by spaces; a solver will solve your copy.",
        "program": ("Write a Python program in a ```python block that prints the solution of the sudoku "
                    "below ('.' is empty) on one line, rows separated by spaces."),
    }

    def __init__(self, task: Sudoku, coords: bool = False, positions: bool = False, numbered: bool = False,
                 field: int = 0):
        del positions, numbered, field  # nothing to act on (module docstring)
        self.task, self.n, self.coords = task, task.size, coords

    def context(self, s: SudokuState) -> str:
        g, n = s.puzzle.givens, self.n
        last = [f"last: {s.history[-1]}"] if s.history else []
        return "\n".join([render_rows(n, lambda r, c: str(g[r * n + c] or "."), self.coords), *last])

    def parse_action(self, text: str) -> Parsed:
        return parse_grid(text, self.n)

    def format_action(self, cells) -> str:
        return rows_text(tuple(cells), self.n)

    def naive_action(self, s: SudokuState):
        """Each empty cell gets the smallest digit not yet in its row, columns and boxes ignored."""
        n, out = self.n, list(s.puzzle.givens)
        for i, v in enumerate(out):
            if not v:
                row = out[i // n * n:(i // n + 1) * n]
                out[i] = next(d for d in range(1, n + 1) if d not in row)
        return tuple(out)

    def noise_action(self, s: SudokuState, rng: random.Random):
        """The givens with every empty cell filled at random with probability 1/2."""
        return tuple(v or (rng.randint(1, self.n) if rng.random() < 0.5 else 0) for v in s.puzzle.givens)

    def parse_query(self, text: str) -> Parsed:
        return parse_grid(text, self.n)

    def format_query(self, cells) -> str:
        return rows_text(tuple(cells), self.n)

    def answer(self, s: SudokuState, tool: str, cells) -> str:
        found, solution = count_solutions(tuple(cells), self.n)
        return rows_text(solution, self.n) if found == 1 else "none" if found == 0 else "many"

    def query(self, s: SudokuState):
        return s.puzzle.givens

    def naive_query(self, s: SudokuState):
        """The puzzle copied column by column (transposed): its solution is the transposed one."""
        return transpose(s.puzzle.givens, self.n)

    def noise_query(self, s: SudokuState, rng: random.Random):
        """The puzzle with one given dropped or changed."""
        cells = list(s.puzzle.givens)
        i = rng.choice([i for i, v in enumerate(cells) if v])
        cells[i] = rng.randint(0, self.n)
        return tuple(cells)

    def program(self, s: SudokuState) -> str:
        return "```python\n" + _PROGRAM.format(puzzle=rows_text(s.puzzle.givens, self.n), n=self.n) + "```"

    def naive_program(self, s: SudokuState) -> str:
        """Prints the row-by-row fill that ignores columns and boxes."""
        return "```python\nprint(" + repr(rows_text(self.naive_action(s), self.n)) + ")\n```"


_PROGRAM = """import math
n = {n}
g = [0 if ch == '.' else int(ch) for ch in {puzzle!r}.replace(' ', '')]
b = math.isqrt(n)
def ok(i, v):
    r, c = divmod(i, n)
    br, bc = r - r % b, c - c % b
    return all(g[r * n + k] != v and g[k * n + c] != v for k in range(n)) and all(
        g[(br + x) * n + bc + y] != v for x in range(b) for y in range(b))
def solve():
    if 0 not in g:
        return True
    i = g.index(0)
    for v in range(1, n + 1):
        if ok(i, v):
            g[i] = v
            if solve():
                return True
    g[i] = 0
    return False
solve()
print(' '.join(''.join(map(str, g[r * n:(r + 1) * n])) for r in range(n)))
"""

register_team("sudoku", planning_family(SudokuBoard))
