"""Sudoku: fill an n x n grid so that every row, column and box holds each of 1..n once.
n = 4 (2x2 boxes, the paper's setting) or 9 (3x3 boxes). Every puzzle has a unique solution.

Cells are a flat tuple of n*n ints in row order, 0 for an empty cell.

The action is a full grid (n*n cells, 0 = left empty), chosen over a list of placements: an
answer of fixed length (19 tokens at 4x4) that a later turn can revise as a whole. A proposal
replaces the board, except that the givens always stay. A full board that keeps the givens and
breaks no rule is the solution (it is unique), so solved = the board equals the solution.

Generation: a random full grid (a base pattern under random relabelling of digits, rows within
bands, bands, columns within stacks, stacks and transposition), then cells are emptied in random
order while the puzzle keeps a unique solution, until `holes` cells are empty (else the attempt is
redrawn). `count_solutions` is an exact backtracking solver (fewest-candidates cell first).

Task reward of one step (each term a field of `SudokuRewards`, set from config):
- goal      +1.0  the board is solved after this step;
- invalid   -0.2  the proposal changed a given, or two of its filled cells break a rule (the same
                  digit twice in a row, column or box); charged once per step;
- progress  +0.5 * (right_after - right_before) / holes, right = non-given cells equal to the
            solution. Potential based: it telescopes, so rewriting a right cell wrong is charged.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace

from envs.base import StepResult, draw, register

# the largest number of holes allowed per size: beyond it unique puzzles get rare (4x4 needs at
# least 4 givens) and generation slow
MAX_HOLES = {4: 11, 9: 55}


@dataclass(frozen=True)
class SudokuRewards:
    goal: float = 1.0
    invalid: float = -0.2
    progress: float = 0.5


def rows_text(cells: tuple[int, ...], n: int) -> str:
    """"12.. 3.4. ...": rows of digits, '.' for empty, separated by spaces."""
    return " ".join("".join(str(v) if v else "." for v in cells[r * n:(r + 1) * n]) for r in range(n))


@dataclass(frozen=True)
class Puzzle:
    n: int
    givens: tuple[int, ...]
    solution: tuple[int, ...]

    @property
    def key(self) -> str:
        return "sudoku:" + rows_text(self.givens, self.n).replace(" ", "/")


@dataclass(frozen=True)
class SudokuState:
    puzzle: Puzzle
    board: tuple[int, ...]
    steps: int = 0
    history: tuple[str, ...] = field(default=())

    @property
    def solved(self) -> bool:
        return self.board == self.puzzle.solution


def units(n: int) -> list[list[int]]:
    """Every row, column and box of an n x n grid, as lists of flat indices."""
    b = math.isqrt(n)
    rows = [[r * n + c for c in range(n)] for r in range(n)]
    cols = [[r * n + c for r in range(n)] for c in range(n)]
    boxes = [[(br + r) * n + bc + c for r in range(b) for c in range(b)]
             for br in range(0, n, b) for bc in range(0, n, b)]
    return rows + cols + boxes


def conflicts(cells: tuple[int, ...], n: int) -> bool:
    """Whether two filled cells of one row, column or box hold the same digit."""
    for unit in units(n):
        vals = [cells[i] for i in unit if cells[i]]
        if len(vals) != len(set(vals)):
            return True
    return False


def count_solutions(cells: tuple[int, ...], n: int, limit: int = 2) -> tuple[int, tuple[int, ...] | None]:
    """(number of solutions up to `limit`, the first one found or None)."""
    if conflicts(cells, n):
        return 0, None
    peers = [set() for _ in range(n * n)]
    for unit in units(n):
        for i in unit:
            peers[i].update(j for j in unit if j != i)
    grid, found, first = list(cells), 0, None
    full = set(range(1, n + 1))

    def search() -> None:
        nonlocal found, first
        best, best_opts = -1, None
        for i, v in enumerate(grid):  # the empty cell with the fewest candidates
            if not v:
                opts = full - {grid[j] for j in peers[i]}
                if best_opts is None or len(opts) < len(best_opts):
                    best, best_opts = i, opts
                    if len(opts) <= 1:
                        break
        if best_opts is None:
            found += 1
            first = first or tuple(grid)
            return
        for v in sorted(best_opts):
            grid[best] = v
            search()
            if found >= limit:
                break
        grid[best] = 0

    search()
    return found, first


def full_grid(n: int, rng: random.Random) -> tuple[int, ...]:
    b = math.isqrt(n)
    digits = rng.sample(range(1, n + 1), n)
    bands, stacks = rng.sample(range(b), b), rng.sample(range(b), b)
    rows = [band * b + r for band in bands for r in rng.sample(range(b), b)]
    cols = [stack * b + c for stack in stacks for c in rng.sample(range(b), b)]
    transpose = rng.random() < 0.5
    out = []
    for r in range(n):
        for c in range(n):
            rr, cc = (cols[c], rows[r]) if transpose else (rows[r], cols[c])
            out.append(digits[(b * (rr % b) + rr // b + cc) % n])  # the base pattern is a valid grid
    return tuple(out)


class Sudoku:
    name = "sudoku"

    def __init__(self, size: int = 4, holes: int = 8, seed: int = 0, rewards: dict | None = None):
        if size not in MAX_HOLES:
            raise ValueError(f"sudoku size must be one of {sorted(MAX_HOLES)}, got {size}")
        if not 1 <= holes <= MAX_HOLES[size]:
            raise ValueError(f"sudoku holes must be in [1, {MAX_HOLES[size]}] for size {size}, got {holes}")
        self.size, self.holes, self.seed = size, holes, seed
        self.rewards = SudokuRewards(**(rewards or {}))

    def _sample(self, rng: random.Random) -> Puzzle | None:
        n = self.size
        solution = full_grid(n, rng)
        cells, removed = list(solution), 0
        for i in rng.sample(range(n * n), n * n):
            if removed == self.holes:
                break
            cells[i] = 0
            if count_solutions(tuple(cells), n)[0] == 1:
                removed += 1
            else:
                cells[i] = solution[i]
        return Puzzle(n, tuple(cells), solution) if removed == self.holes else None

    def instance(self, split: str, index: int) -> Puzzle:
        """The index-th instance of a split (envs.base.draw)."""
        return draw(split, index, f"sudoku/{self.seed}/{self.size}/{self.holes}", self._sample)

    def initial_state(self, puzzle: Puzzle) -> SudokuState:
        return SudokuState(puzzle=puzzle, board=puzzle.givens)

    def is_solved(self, state: SudokuState) -> bool:
        return state.solved

    def oracle(self, state: SudokuState) -> tuple[int, ...]:
        return state.puzzle.solution

    def right(self, board: tuple[int, ...], puzzle: Puzzle) -> int:
        return sum(g == 0 and v == s for v, g, s in zip(board, puzzle.givens, puzzle.solution))

    def step(self, state: SudokuState, action: tuple[int, ...]) -> StepResult:
        p, n, w = state.puzzle, state.puzzle.n, self.rewards
        if len(action) != n * n or any(not 0 <= v <= n for v in action):
            raise ValueError(f"a sudoku action is {n * n} cells, each 0 (empty) or 1..{n}")
        changed = any(g and v != g for v, g in zip(action, p.givens))
        board = tuple(g or v for v, g in zip(action, p.givens))  # givens always stay
        clash = conflicts(board, n)
        new = replace(state, board=board, steps=state.steps + 1)
        solved = new.solved
        terms = {
            "goal": w.goal if solved else 0.0,
            "invalid": w.invalid if changed or clash else 0.0,
            "progress": w.progress * (self.right(board, p) - self.right(state.board, p)) / max(p.givens.count(0), 1),
        }
        # (a full board that keeps the givens without a clash is the solution, so "gaps" is the rest)
        outcome = "goal" if solved else "given" if changed else "conflict" if clash else "gaps"
        new = replace(new, history=state.history + (f"{rows_text(board, n)} -> {outcome}",))
        return StepResult(new, sum(terms.values()), solved, terms, {"changed_given": changed, "conflict": clash})


register("sudoku", Sudoku)
