"""Sokoban's and Sudoku's boards: rendering, the action and query languages, the tools (query and
program) and the demonstrators. Turn order and rewards are shared and tested in test_harness.py."""
from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

import envs
import roles  # noqa: F401  (registers the harnesses)
from envs.sokoban import SokobanState, solve
from envs.sudoku import rows_text
from roles.base import Parsed, make_harness
from roles.sokoban import naive_pushes, render_room
from roles.sudoku import parse_grid, transpose


def first_turn(h, i=0, split="val", tool_text=None):
    """The team's state after the tool agent acted (with its demo, or `tool_text`)."""
    state = h.reset(h.task.instance(split, i))
    return h.act_sync(state, "tool", tool_text if tool_text is not None else h.role("tool").demo(state))


# --- Sokoban --------------------------------------------------------------------------------

def test_sokoban_prompt_shows_the_room_and_the_positions_line():
    h = make_harness(envs.make("sokoban"), "mas", positions=True)
    s0 = h.reset(h.task.instance("val", 0))
    r = s0.task_state.room
    prompt = h.prompt(s0, "tool")
    assert prompt.endswith("\ngoal:") and render_room(s0.task_state) in prompt
    assert f"@ {r.player[0]} {r.player[1]} $ {r.box[0]} {r.box[1]} O {r.target[0]} {r.target[1]}" in prompt
    on_target = SokobanState(r, r.target, r.box)
    assert "+" in render_room(on_target) and "O" not in render_room(on_target)


def test_sokoban_goal_tool_answers_with_the_solver_path():
    h = make_harness(envs.make("sokoban"), "mas")
    for i in range(20):
        out = first_turn(h, i)
        s = out.state.task_state
        assert out.local == 1.0 and out.state.tool_output == " ".join(h.task.oracle(s))
        naive = first_turn(h, i, tool_text=h.role("tool").naive(h.reset(h.task.instance("val", i))))
        r = s.room
        if r.target[0] != r.target[1]:  # off the diagonal the transposed cell is another cell
            want = solve(r, r.player, r.box, (r.target[1], r.target[0]))
            assert naive.local == 0.0
            assert naive.state.tool_output == ("none" if want is None else " ".join(want) or "here")


def test_sokoban_naive_pushes_solve_an_open_room_and_ignore_walls():
    # rows first: walk behind the box (1,3), push it down once; then walk behind it (3,4), push left twice
    assert naive_pushes((1, 1), (2, 3), (3, 1)) == ["R", "R", "D", "D", "R", "L", "L"]
    assert naive_pushes((2, 1), (2, 2), (2, 4)) == ["R", "R"]  # already behind it: push straight
    task = envs.make("sokoban", wall_frac=0.0)
    solved = 0
    for i in range(100):
        s = task.initial_state(task.instance("train", i))
        res = task.step(s, tuple(naive_pushes(s.player, s.box, s.room.target)))
        solved += res.solved
    assert 20 <= solved < 100  # right often in an open room, never always: it walks through the box


def test_sokoban_program_tool_prints_the_solver_path():
    h = make_harness(envs.make("sokoban"), "mas", tool="program")
    for i in range(3):
        out = first_turn(h, i)
        assert out.parse_ok and out.local == 1.0
        assert out.state.tool_output == " ".join(h.task.oracle(out.state.task_state))


# --- Sudoku ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "cells"), [
    ("1234 3412 2143 4321", (1, 2, 3, 4, 3, 4, 1, 2, 2, 1, 4, 3, 4, 3, 2, 1)),
    ("plan: 12.. ..3. 0000 4321", (1, 2, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 4, 3, 2, 1)),
    ("here it is\n12|34\n34|12\n21|43\n43|21", (1, 2, 3, 4, 3, 4, 1, 2, 2, 1, 4, 3, 4, 3, 2, 1)),
    ('["1234", "3412", "2143", "4321"]', (1, 2, 3, 4, 3, 4, 1, 2, 2, 1, 4, 3, 4, 3, 2, 1)),
])
def test_parse_grid_examples(text, cells):
    assert parse_grid(text, 4) == Parsed(True, cells)


@pytest.mark.parametrize("text", ["", "1234 3412", "1234 3412 2143 4325", "1234 3412 2143 432x",
                                  "1234 3412 2143 4321 1", "\u0661234 3412 2143 4321"])
def test_parse_grid_rejects_with_a_reason(text):
    p = parse_grid(text, 4)
    assert not p.ok and p.error


@given(st.lists(st.integers(0, 9), min_size=81, max_size=81))
def test_grid_format_then_parse_is_identity(cells):
    assert parse_grid(rows_text(tuple(cells), 9), 9) == Parsed(True, tuple(cells))


def test_sudoku_prompt_shows_the_puzzle_and_the_last_proposal():
    h = make_harness(envs.make("sudoku"), "mas", tool="grid")
    out = first_turn(h, 0)
    p = out.state.task_state.puzzle
    prompt = h.prompt(out.state, "plan")
    assert "\n".join(rows_text(p.givens, 4).split()) in prompt
    assert prompt.endswith(f"tool: {rows_text(p.solution, 4)}\nplan:")
    after = h.act_sync(out.state, "plan", rows_text(p.givens, 4))
    assert f"last: {rows_text(p.givens, 4)} -> gaps" in h.prompt(after.state, "tool")


def test_sudoku_grid_tool_solves_the_copy_it_is_given():
    h = make_harness(envs.make("sudoku"), "mas", tool="grid")
    for i in range(20):
        s0 = h.reset(h.task.instance("val", i))
        p = s0.task_state.puzzle
        out = first_turn(h, i)
        assert out.local == 1.0 and out.state.tool_output == rows_text(p.solution, 4)
        naive = h.act_sync(s0, "tool", h.role("tool").naive(s0))  # the puzzle copied transposed
        assert naive.state.tool_output == rows_text(transpose(p.solution, 4), 4)
        assert naive.local == (1.0 if transpose(p.solution, 4) == p.solution else 0.0)
    s0 = h.reset(h.task.instance("val", 0))
    assert h.act_sync(s0, "tool", "1111 .... .... ....").state.tool_output == "none"
    assert h.act_sync(s0, "tool", "1... .... .... ....").state.tool_output == "many"


def test_sudoku_naive_fills_rows_only():
    h = make_harness(envs.make("sudoku"), "single")
    wrong = 0
    for i in range(100):
        s0 = h.reset(h.task.instance("train", i))
        cells = parse_grid(h.role("plan").naive(s0), 4).action
        assert all(sorted(cells[r * 4:(r + 1) * 4]) == [1, 2, 3, 4] for r in range(4))
        wrong += cells != s0.task_state.puzzle.solution
    assert 30 <= wrong < 100


def test_sudoku_program_tool_prints_the_solution():
    h = make_harness(envs.make("sudoku"), "mas", tool="program")
    for i in range(3):
        out = first_turn(h, i)
        assert out.parse_ok and out.local == 1.0
        assert out.state.tool_output == rows_text(out.state.task_state.puzzle.solution, 4)


@pytest.mark.parametrize(("task_name", "allowed"), [("planpath", "goal, program"), ("sokoban", "goal, program"),
                                                    ("sudoku", "grid, program")])
def test_unknown_tool_names_the_task_and_its_tools(task_name, allowed):
    with pytest.raises(ValueError, match=f"harness.tool='magic'; allowed: {allowed}, or null$"):
        make_harness(envs.make(task_name), "mas", tool="magic")


def test_sokoban_noise_never_leaves_a_dead_box():
    h = make_harness(envs.make("sokoban"), "single")
    rng = random.Random(0)
    for i in range(100):
        s = h.reset(h.task.instance("train", i))
        out = h.act_sync(s, "plan", h.role("plan").noise(s, rng))
        assert h.task.oracle(out.state.task_state) is not None  # None in a dead state
