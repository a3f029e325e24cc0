"""Plan-Path: walk from a start cell to a goal cell on an N x N grid with walls.

An action is a sequence of moves from {U, D, L, R}. Moves run in order; the first move into a
wall or off the grid stops the sequence (the agent stays on its last legal cell). Moves after
the goal is reached are ignored.

Task reward of one step (each term is a field of `PlanPathRewards`, set from config):
- goal        +1.0  the step ends on the goal;
- optimal     +0.5  ...and the whole episode used exactly the BFS distance in moves;
- invalid     -0.2  the sequence hit a wall or the border (charged once per step);
- progress    +0.5 * (d_before - d_after) / d_start, d = BFS distance to the goal. Potential
              based: it telescopes over an episode, so wandering back and forth earns nothing,
              and a step that moves away from the goal is charged.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from envs.base import StepResult, draw, register
from envs.grid import Cell, Walled, bfs, grid_key, run_moves


@dataclass(frozen=True)
class PlanPathRewards:
    goal: float = 1.0
    optimal: float = 0.5
    invalid: float = -0.2
    progress: float = 0.5


@dataclass(frozen=True)
class Grid(Walled):
    size: int
    walls: frozenset[Cell]
    start: Cell
    goal: Cell

    @property
    def key(self) -> str:
        """Canonical content string: what makes two instances 'the same'."""
        return grid_key("planpath", self.size, self.char)

    def char(self, r: int, c: int) -> str:
        if (r, c) in self.walls:
            return "#"
        return "S" if (r, c) == self.start else "G" if (r, c) == self.goal else "."


@dataclass(frozen=True)
class PlanPathState:
    grid: Grid
    pos: Cell
    moves_used: int = 0
    steps: int = 0
    history: tuple[str, ...] = field(default=())  # one line per executed step, for prompts

    @property
    def solved(self) -> bool:
        return self.pos == self.grid.goal


def bfs_path(grid: Grid, src: Cell, dst: Cell) -> list[str] | None:
    """A shortest list of moves from src to dst, or None if dst is unreachable (ties: envs.grid.bfs)."""
    if not grid.free(src) or not grid.free(dst):
        return None
    return bfs(src, grid.walk, lambda cell: cell == dst)


def distance(grid: Grid, src: Cell, dst: Cell) -> int | None:
    path = bfs_path(grid, src, dst)
    return None if path is None else len(path)


def simulate(grid: Grid, pos: Cell, moves: tuple[str, ...] | list[str]) -> tuple[Cell, int, bool]:
    """Run moves from pos. Returns (end cell, moves executed, hit an illegal move)."""
    return run_moves(pos, moves, grid.walk, done=lambda cell: cell == grid.goal)


class PlanPath:
    """N x N grids, each cell a wall with probability `wall_frac`; start != goal, goal reachable,
    BFS distance at least `min_dist`."""

    name = "planpath"

    def __init__(self, size: int = 5, wall_frac: float = 0.22, min_dist: int = 2,
                 seed: int = 0, rewards: dict | None = None):
        if size < 2:
            raise ValueError(f"planpath size must be >= 2, got {size}")
        if not 0.0 <= wall_frac < 0.7:
            raise ValueError(f"planpath wall_frac must be in [0, 0.7), got {wall_frac}")
        if not 1 <= min_dist <= 2 * (size - 1):
            # Beyond 2(size-1) instances exist only for walled detours and are rare enough that
            # generation could spin for ever; the bound keeps instance() terminating.
            raise ValueError(f"planpath min_dist must be in [1, {2 * (size - 1)}] for size {size}, got {min_dist}")
        self.size, self.wall_frac, self.min_dist, self.seed = size, wall_frac, min_dist, seed
        self.rewards = PlanPathRewards(**(rewards or {}))

    def _sample(self, rng: random.Random) -> Grid | None:
        cells = [(r, c) for r in range(self.size) for c in range(self.size)]
        walls = frozenset(x for x in cells if rng.random() < self.wall_frac)
        free = [x for x in cells if x not in walls]
        if len(free) < 2:
            return None
        start, goal = rng.sample(free, 2)
        grid = Grid(self.size, walls, start, goal)
        d = distance(grid, start, goal)
        return grid if d is not None and d >= self.min_dist else None

    def instance(self, split: str, index: int) -> Grid:
        """The index-th instance of a split (envs.base.draw)."""
        return draw(split, index, f"planpath/{self.seed}/{self.size}/{self.wall_frac}", self._sample)

    def initial_state(self, grid: Grid) -> PlanPathState:
        return PlanPathState(grid=grid, pos=grid.start)

    def is_solved(self, state: PlanPathState) -> bool:
        return state.solved

    def oracle(self, state: PlanPathState) -> tuple[str, ...]:
        path = bfs_path(state.grid, state.pos, state.grid.goal)
        assert path is not None, "generated instances are solvable and moves keep the goal reachable"
        return tuple(path)

    def step(self, state: PlanPathState, action: tuple[str, ...]) -> StepResult:
        grid, w = state.grid, self.rewards
        d_start = distance(grid, grid.start, grid.goal) or 1
        d_before = distance(grid, state.pos, grid.goal)
        pos, executed, illegal = simulate(grid, state.pos, action)
        d_after = distance(grid, pos, grid.goal)
        moves_used = state.moves_used + executed
        solved = pos == grid.goal
        terms = {
            "goal": w.goal if solved else 0.0,
            "optimal": w.optimal if solved and moves_used == d_start else 0.0,
            "invalid": w.invalid if illegal else 0.0,
            "progress": w.progress * (d_before - d_after) / d_start,  # type: ignore[operator]
        }
        outcome = "goal" if solved else "wall" if illegal else f"at {pos[0]} {pos[1]}"
        line = f"{' '.join(action) or '-'} -> {outcome}"
        new = replace(state, pos=pos, moves_used=moves_used, steps=state.steps + 1,
                      history=state.history + (line,))
        return StepResult(new, sum(terms.values()), solved, terms, {"illegal": illegal, "executed": executed})


register("planpath", PlanPath)
