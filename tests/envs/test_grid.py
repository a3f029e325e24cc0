"""The shared move helpers (envs/grid.py): a grid's move rule, running a move list, BFS."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from envs.grid import Cell, Walled, bfs, run_moves


@dataclass(frozen=True)
class Board(Walled):
    size: int
    walls: frozenset[Cell] = frozenset()


OPEN = Board(3)


def test_walk_is_none_into_a_wall_or_off_the_grid():
    b = Board(3, frozenset({(1, 1)}))
    assert b.walk((0, 1), "L") == (0, 0) and b.walk((0, 1), "R") == (0, 2)
    assert b.walk((0, 1), "D") is None  # the wall
    assert b.walk((0, 1), "U") is None and b.walk((2, 2), "R") is None  # the border


def test_run_moves_stops_at_the_first_illegal_move_without_making_it():
    assert run_moves((0, 0), "RRRD", OPEN.walk) == ((0, 2), 2, True)
    assert run_moves((0, 0), "RDD", OPEN.walk) == ((2, 1), 3, False)


def test_run_moves_stops_once_done_and_ignores_what_follows():
    at_centre = lambda cell: cell == (1, 1)
    assert run_moves((0, 0), "RDRR", OPEN.walk, at_centre) == ((1, 1), 2, False)
    assert run_moves((1, 1), "RR", OPEN.walk, at_centre) == ((1, 1), 0, False)  # done before any move
    # an unknown move after the stop is never read, as before the helper existed
    assert run_moves((0, 0), "RDX", OPEN.walk, at_centre) == ((1, 1), 2, False)
    assert run_moves((0, 0), "UX", OPEN.walk) == ((0, 0), 0, True)


def test_run_moves_rejects_an_unknown_move():
    with pytest.raises(ValueError, match="unknown move 'X'; allowed: U, D, L, R"):
        run_moves((0, 0), "RX", OPEN.walk)


def test_bfs_breaks_ties_by_move_order_and_keeps_the_first_path_found():
    # (1, 1) is reached by D R and by R D; D comes first in U D L R and wins. Taking R first, or
    # letting a later path overwrite the back-pointer, both give R D.
    assert bfs((0, 0), OPEN.walk, lambda cell: cell == (1, 1)) == ["D", "R"]
    assert bfs((0, 0), OPEN.walk, lambda cell: cell == (2, 2)) == ["D", "D", "R", "R"]
    assert bfs((2, 2), OPEN.walk, lambda cell: cell == (0, 0)) == ["U", "U", "L", "L"]


def test_bfs_finds_a_shortest_path_round_walls():
    b = Board(3, frozenset({(0, 1), (1, 1)}))
    path = bfs((0, 0), b.walk, lambda cell: cell == (0, 2))
    assert path == ["D", "D", "R", "R", "U", "U"]
    assert run_moves((0, 0), path, b.walk) == ((0, 2), 6, False)


def test_bfs_start_at_goal_and_unreachable():
    assert bfs((1, 1), OPEN.walk, lambda cell: cell == (1, 1)) == []
    shut = Board(3, frozenset({(0, 1), (1, 0), (1, 1)}))
    assert bfs((0, 0), shut.walk, lambda cell: cell == (2, 2)) is None


def line(x: int, move: str) -> int | None:
    """A move rule on the states 0..4 of a line: only L and R are legal."""
    nxt = x + {"R": 1, "L": -1}.get(move, 99)
    return nxt if 0 <= nxt <= 4 else None


def test_bfs_searches_any_hashable_state():
    assert bfs(1, line, lambda x: x == 4) == ["R", "R", "R"]
    assert bfs(3, line, lambda x: x == 7) is None
