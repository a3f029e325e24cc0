"""Sokoban: push the one box onto the target in a walled room (the paper's setting: 6x6, one box).

The room is `size` x `size` with a wall all round, so the floor is the (size-2)^2 interior, a few
cells of which may be walls too. An action is a sequence of moves from {U, D, L, R}: a move onto
a free cell walks there; a move onto the box pushes it one cell on if the cell beyond is free.
The first move into a wall, or a push into a wall or the box against a wall, stops the sequence
(it is not made). Moves after the box reaches the target are ignored.

The solver (`solve`) is a breadth-first search over (player, box) cells: it returns a shortest
move sequence (fewest moves, pushes included; ties broken by the fixed order U, D, L, R), so the
oracle is optimal and deterministic. The generator only emits rooms the solver solves.

Task reward of one step (each term a field of `SokobanRewards`, set from config):
- goal      +1.0  the step ends with the box on the target;
- optimal   +0.5  ...and the whole episode used exactly the solver's number of moves;
- invalid   -0.2  the sequence ran into a wall or pushed the box into one (once per step);
- progress  +0.5 * (d_before - d_after) / d_start, d = the solver's remaining moves. Potential
            based, so it telescopes over an episode. A dead state (the box can no longer reach
            the target, e.g. pushed into a corner) counts as d = dead * d_start (dead = 2.0):
            pushing the box into a corner costs at least 0.5, and nothing after it can earn
            that back.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field, replace

from envs.base import StepResult, draw, register
from envs.grid import Cell, Walled, bfs, grid_key, run_moves


@dataclass(frozen=True)
class SokobanRewards:
    goal: float = 1.0
    optimal: float = 0.5
    invalid: float = -0.2
    progress: float = 0.5
    dead: float = 2.0  # a dead state's distance, in units of d_start (not a term: part of progress)


@dataclass(frozen=True)
class Room(Walled):
    """An instance: the room (walls include the border) and where the target, box and player start."""
    size: int
    walls: frozenset[Cell]
    target: Cell
    box: Cell
    player: Cell

    @property
    def key(self) -> str:
        return grid_key("sokoban", self.size, self.char)

    def char(self, r: int, c: int) -> str:
        cell = (r, c)
        if cell in self.walls:
            return "#"
        return "$" if cell == self.box else "@" if cell == self.player else "O" if cell == self.target else "."


@dataclass(frozen=True)
class SokobanState:
    room: Room
    player: Cell
    box: Cell
    moves_used: int = 0
    steps: int = 0
    history: tuple[str, ...] = field(default=())

    @property
    def solved(self) -> bool:
        return self.box == self.room.target


def push(room: Room, player: Cell, box: Cell, move: str) -> tuple[Cell, Cell] | None:
    """(player, box) after one move, or None if the move is illegal (a move rule, envs.grid)."""
    nxt = room.walk(player, move)
    if nxt is None:
        return None
    if nxt != box:
        return nxt, box
    beyond = room.walk(box, move)
    return None if beyond is None else (nxt, beyond)


def rule(room: Room):
    """`push` as a move rule on (player, box) states, for envs.grid's run_moves and bfs."""
    return lambda pb, move: push(room, pb[0], pb[1], move)


def simulate(room: Room, player: Cell, box: Cell, moves: tuple[str, ...] | list[str],
             stop_on_target: bool = True) -> tuple[tuple[Cell, Cell], int, bool]:
    """Run moves from (player, box). Returns ((player, box) at the end, moves executed, hit an
    illegal move). The task stops once the box is on the target; stop_on_target=False runs on
    past it (roles/sokoban.py's noise check, which has always done so)."""
    done = (lambda pb: pb[1] == room.target) if stop_on_target else (lambda pb: False)
    return run_moves((player, box), moves, rule(room), done)


@functools.lru_cache(maxsize=1 << 16)
def solve(room: Room, player: Cell, box: Cell, target: Cell) -> tuple[str, ...] | None:
    """A shortest move sequence that puts the box on `target` (any cell), or None if none does."""
    if not room.free(target):
        return None
    path = bfs((player, box), rule(room), lambda pb: pb[1] == target)
    return None if path is None else tuple(path)


def remaining(state: SokobanState) -> int | None:
    """The solver's number of moves left, None in a dead state."""
    path = solve(state.room, state.player, state.box, state.room.target)
    return None if path is None else len(path)


class Sokoban:
    """size x size rooms with a border wall; each interior cell a wall with probability
    `wall_frac`; target, box and player on distinct free cells; the solver's solution has between
    `min_moves` and `max_moves` moves (None: no upper bound). The default bound of 8 keeps answers
    short for the tiny model (16 tokens; BENCHMARKS.md, Choices in the tiny default); the paper's
    rooms are unbounded."""

    name = "sokoban"

    def __init__(self, size: int = 6, wall_frac: float = 0.1, min_moves: int = 3, max_moves: int | None = 8,
                 seed: int = 0, rewards: dict | None = None):
        if not 4 <= size <= 12:
            raise ValueError(f"sokoban size must be in [4, 12] (the room with its border wall), got {size}")
        if not 0.0 <= wall_frac < 0.5:
            raise ValueError(f"sokoban wall_frac must be in [0, 0.5), got {wall_frac}")
        if not 1 <= min_moves <= 3 * (size - 2):
            # longer minimum solutions are too rare in small rooms for generation to terminate soon
            raise ValueError(f"sokoban min_moves must be in [1, {3 * (size - 2)}] for size {size}, got {min_moves}")
        if max_moves is not None and max_moves < min_moves:
            raise ValueError(f"sokoban max_moves ({max_moves}) must be >= min_moves ({min_moves}) or null")
        self.size, self.wall_frac, self.seed = size, wall_frac, seed
        self.min_moves, self.max_moves = min_moves, max_moves
        self.rewards = SokobanRewards(**(rewards or {}))

    def _sample(self, rng: random.Random) -> Room | None:
        n = self.size
        border = {(r, c) for r in range(n) for c in range(n) if r in (0, n - 1) or c in (0, n - 1)}
        inner = [(r, c) for r in range(1, n - 1) for c in range(1, n - 1)]
        walls = frozenset(border | {x for x in inner if rng.random() < self.wall_frac})
        free = [x for x in inner if x not in walls]
        if len(free) < 3:
            return None
        target, box, player = rng.sample(free, 3)
        room = Room(n, walls, target, box, player)
        path = solve(room, player, box, target)
        if path is None or len(path) < self.min_moves:
            return None
        return room if self.max_moves is None or len(path) <= self.max_moves else None

    def instance(self, split: str, index: int) -> Room:
        """The index-th instance of a split (envs.base.draw)."""
        stream = f"sokoban/{self.seed}/{self.size}/{self.wall_frac}/{self.min_moves}/{self.max_moves}"
        return draw(split, index, stream, self._sample)

    def initial_state(self, room: Room) -> SokobanState:
        return SokobanState(room=room, player=room.player, box=room.box)

    def is_solved(self, state: SokobanState) -> bool:
        return state.solved

    def oracle(self, state: SokobanState) -> tuple[str, ...] | None:
        """A shortest solution, or None in a dead state (the box can no longer reach the target)."""
        return solve(state.room, state.player, state.box, state.room.target)

    def step(self, state: SokobanState, action: tuple[str, ...]) -> StepResult:
        room, w = state.room, self.rewards
        d_start = len(solve(room, room.player, room.box, room.target) or ()) or 1
        dead = w.dead * d_start
        d_before = remaining(state)
        (player, box), executed, illegal = simulate(room, state.player, state.box, action)
        new = replace(state, player=player, box=box, moves_used=state.moves_used + executed, steps=state.steps + 1)
        d_after = remaining(new)
        solved = new.solved
        terms = {
            "goal": w.goal if solved else 0.0,
            "optimal": w.optimal if solved and new.moves_used == d_start else 0.0,
            "invalid": w.invalid if illegal else 0.0,
            "progress": w.progress * ((dead if d_before is None else d_before)
                                      - (dead if d_after is None else d_after)) / d_start,
        }
        outcome = "goal" if solved else "wall" if illegal else "dead" if d_after is None else "moved"
        new = replace(new, history=state.history + (f"{' '.join(action) or '-'} -> {outcome}",))
        return StepResult(new, sum(terms.values()), solved, terms,
                          {"illegal": illegal, "executed": executed, "dead": d_after is None})


register("sokoban", Sokoban)
