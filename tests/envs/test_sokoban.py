"""Sokoban task: the push rules, the solver's optimality, the generator, every reward term."""
from __future__ import annotations

import itertools

import pytest

from envs.sokoban import Room, Sokoban, SokobanState, push, simulate, solve


def room(rows: list[str]) -> Room:
    """A hand-made room: '#' wall, '@' player, '$' box, 'O' target, '.' floor."""
    walls = frozenset((r, c) for r, row in enumerate(rows) for c, ch in enumerate(row) if ch == "#")
    find = lambda ch: next((r, c) for r, row in enumerate(rows) for c, x in enumerate(row) if x == ch)
    return Room(len(rows), walls, find("O"), find("$"), find("@"))


OPEN = room(["######",
             "#....#",
             "#.@$O#",
             "#....#",
             "#....#",
             "######"])


def start(r: Room) -> SokobanState:
    return Sokoban().initial_state(r)


def play(state: SokobanState, moves) -> tuple[SokobanState, bool]:
    """Reference rules written out separately: returns the state after `moves` and whether one
    of them was illegal (the sequence stops there)."""
    player, box = state.player, state.box
    for m in moves:
        if box == state.room.target:
            break
        dr, dc = {"U": (-1, 0), "D": (1, 0), "L": (0, -1), "R": (0, 1)}[m]
        p = (player[0] + dr, player[1] + dc)
        if p in state.room.walls:
            return SokobanState(state.room, player, box), True
        if p == box:
            b = (box[0] + dr, box[1] + dc)
            if b in state.room.walls:
                return SokobanState(state.room, player, box), True
            box = b
        player = p
    return SokobanState(state.room, player, box), False


def test_push_rules():
    assert push(OPEN, (2, 2), (2, 3), "U") == ((1, 2), (2, 3))  # walk
    assert push(OPEN, (2, 2), (2, 3), "R") == ((2, 3), (2, 4))  # push
    assert push(OPEN, (2, 3), (2, 4), "R") is None  # box into the wall
    assert push(OPEN, (1, 2), (2, 3), "U") is None  # player into the wall


def test_simulate_stops_on_the_target_unless_told_to_run_on():
    # the box reaches the target with the first R: the task ignores the moves after it, the noise
    # check in roles/sokoban.py (stop_on_target=False) runs them
    assert simulate(OPEN, OPEN.player, OPEN.box, ("R", "U")) == (((2, 3), (2, 4)), 1, False)
    assert simulate(OPEN, OPEN.player, OPEN.box, ("R", "U"), stop_on_target=False) == (((1, 3), (2, 4)), 2, False)
    assert simulate(OPEN, OPEN.player, OPEN.box, ("R", "R"), stop_on_target=False) == (((2, 3), (2, 4)), 1, True)


def test_one_push_solves_with_goal_and_optimal():
    task = Sokoban()
    res = task.step(start(OPEN), ("R",))
    assert res.solved and res.terms == {"goal": 1.0, "optimal": 0.5, "invalid": 0.0, "progress": 0.5}
    assert res.state.history == ("R -> goal",)


def test_moves_after_the_goal_are_ignored_and_illegal_moves_stop():
    task = Sokoban()
    res = task.step(start(OPEN), ("R", "L", "L"))
    assert res.solved and res.state.moves_used == 1
    res = task.step(start(OPEN), ("U", "U", "R"))  # the second U hits the wall; R never runs
    assert res.terms["invalid"] == -0.2 and res.state.player == (1, 2) and not res.solved
    assert res.state.history[-1].endswith("-> wall")


def test_step_matches_the_reference_rules_on_random_sequences():
    task, rng = Sokoban(), __import__("random").Random(0)
    for i in range(200):
        s = task.initial_state(task.instance("train", i))
        moves = tuple(rng.choice("UDLR") for _ in range(rng.randint(1, 8)))
        res = task.step(s, moves)
        ref, illegal = play(s, moves)
        assert (res.state.player, res.state.box) == (ref.player, ref.box)
        assert res.info["illegal"] == illegal and s == task.initial_state(task.instance("train", i))


@pytest.mark.parametrize("i", range(25))
def test_solver_is_optimal_against_exhaustive_search(i):
    task = Sokoban(max_moves=6)
    s = task.initial_state(task.instance("val", i))
    path = task.oracle(s)
    assert play(s, path)[0].box == s.room.target
    for n in range(1, len(path)):  # no sequence shorter than the solver's solves it
        for moves in itertools.product("UDLR", repeat=n):
            assert play(s, moves)[0].box != s.room.target, moves


def test_generator_emits_solvable_rooms_within_bounds():
    task = Sokoban(min_moves=4, max_moves=9)
    for i in range(300):
        r = task.instance("train", i)
        n = r.size
        assert all((x, y) in r.walls for x in range(n) for y in range(n) if x in (0, n - 1) or y in (0, n - 1))
        assert len({r.target, r.box, r.player}) == 3 and not {r.target, r.box, r.player} & r.walls
        assert 4 <= len(solve(r, r.player, r.box, r.target)) <= 9


def test_progress_telescopes_and_a_dead_box_is_charged():
    task = Sokoban()
    for i in range(50):
        s = task.initial_state(task.instance("test", i))
        total = 0.0
        for m in task.oracle(s):  # one move per step
            res = task.step(s, (m,))
            total += res.terms["progress"]
            s = res.state
        assert s.solved and total == pytest.approx(0.5)
    s = start(room(["######",
                    "#....#",
                    "#.$..#",
                    "#.@.O#",
                    "#....#",
                    "######"]))
    res = task.step(s, ("U",))  # the box goes into row 1 against the top wall: dead
    assert res.info["dead"] and res.terms["progress"] <= -0.5 and res.state.history[-1].endswith("-> dead")
    assert task.oracle(res.state) is None
    again = task.step(res.state, ("U",))  # a push into the wall: not made
    assert again.terms["invalid"] == -0.2 and again.state.box == res.state.box
    assert again.terms["progress"] == 0.0  # dead before and after


@pytest.mark.parametrize(("kwargs", "match"), [({"size": 3}, "size"), ({"wall_frac": 0.6}, "wall_frac"),
                                               ({"min_moves": 0}, "min_moves"),
                                               ({"min_moves": 5, "max_moves": 4}, "max_moves")])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Sokoban(**kwargs)
