"""Sudoku task: valid full grids, unique-solution puzzles, the solver, every reward term."""
from __future__ import annotations

import itertools

import pytest

from envs.sudoku import Sudoku, conflicts, count_solutions, full_grid, rows_text


def brute_solutions(cells, n):
    """Every completion of `cells` by trying all digit tuples for its holes (4x4 only)."""
    holes = [i for i, v in enumerate(cells) if not v]
    out = []
    for digits in itertools.product(range(1, n + 1), repeat=len(holes)):
        g = list(cells)
        for i, d in zip(holes, digits):
            g[i] = d
        if not conflicts(tuple(g), n):
            out.append(tuple(g))
    return out


@pytest.mark.parametrize("n", [4, 9])
def test_full_grids_are_valid_and_varied(n):
    rng = __import__("random").Random(0)
    grids = {full_grid(n, rng) for _ in range(50)}
    assert len(grids) > 20
    for g in grids:
        assert all(g) and not conflicts(g, n)


def test_count_solutions_matches_brute_force():
    rng = __import__("random").Random(1)
    for _ in range(40):
        sol = full_grid(4, rng)
        cells = list(sol)
        for i in rng.sample(range(16), rng.randint(3, 7)):  # up to 4^7 fillings each
            cells[i] = 0
        ref = brute_solutions(tuple(cells), 4)
        found, first = count_solutions(tuple(cells), 4, limit=100)
        assert found == len(ref) and first in ref


@pytest.mark.parametrize(("size", "holes", "n"), [(4, 8, 200), (4, 11, 50), (9, 40, 3)])
def test_puzzles_have_a_unique_solution_and_the_right_holes(size, holes, n):
    task = Sudoku(size=size, holes=holes)
    for i in range(n):
        p = task.instance("train", i)
        assert p.givens.count(0) == holes
        assert all(g in (0, s) for g, s in zip(p.givens, p.solution))
        assert count_solutions(p.givens, size) == (1, p.solution)


def test_solution_scores_goal_and_all_progress():
    task = Sudoku()
    s = task.initial_state(task.instance("val", 0))
    res = task.step(s, s.puzzle.solution)
    assert res.solved and res.terms == {"goal": 1.0, "invalid": 0.0, "progress": 0.5}
    assert res.state.history == (f"{rows_text(s.puzzle.solution, 4)} -> goal",)


def test_givens_always_stay_and_changing_one_is_charged():
    task = Sudoku()
    s = task.initial_state(task.instance("val", 1))
    p = s.puzzle
    i = next(i for i, v in enumerate(p.givens) if v)
    wrong = list(p.solution)
    wrong[i] = p.solution[i] % 4 + 1
    res = task.step(s, tuple(wrong))
    assert res.state.board == p.solution and res.solved  # the given was kept, so the board is right
    assert res.terms["invalid"] == -0.2 and res.info["changed_given"]


def test_conflicts_are_charged_and_progress_telescopes():
    task = Sudoku()
    s0 = task.initial_state(task.instance("test", 2))
    p = s0.puzzle
    holes = [i for i, v in enumerate(p.givens) if not v]
    half = list(p.givens)
    for i in holes[:4]:
        half[i] = p.solution[i]
    r1 = task.step(s0, tuple(half))
    assert r1.terms == {"goal": 0.0, "invalid": 0.0, "progress": pytest.approx(0.25)}
    assert r1.state.history[-1].endswith("-> gaps")
    clash = list(p.givens)
    clash[holes[0]] = p.solution[holes[1]] if holes[1] // 4 == holes[0] // 4 else 0
    r2 = task.step(r1.state, tuple(clash))  # rewrites the four right cells as empty
    assert r2.terms["progress"] == pytest.approx(-0.25)
    r3 = task.step(r2.state, p.solution)
    assert r1.reward - r1.terms["invalid"] + r2.terms["progress"] + r3.terms["progress"] == pytest.approx(0.5)
    bad = list(p.solution)
    a, b = holes[0], next(j for j in range(16) if j // 4 == holes[0] // 4 and j != holes[0])
    bad[a] = p.solution[b]  # the same digit twice in a row
    res = task.step(s0, tuple(bad))
    assert res.info["conflict"] and res.terms["invalid"] == -0.2 and not res.solved


def test_bad_actions_and_settings_are_refused():
    task = Sudoku()
    s = task.initial_state(task.instance("train", 0))
    with pytest.raises(ValueError, match="16 cells"):
        task.step(s, (1, 2, 3))
    with pytest.raises(ValueError, match="size"):
        Sudoku(size=5)
    with pytest.raises(ValueError, match="holes"):
        Sudoku(holes=12)
