"""Harness turn order, purity of `act`, team/local rewards, what the planner sees, the program tool."""
from __future__ import annotations

import copy
import random
import time
from dataclasses import replace

import pytest

import envs
import roles  # noqa: F401  (registers the harnesses)
from envs.planpath import PlanPath, bfs_path, simulate
from roles.base import Harness, TeamState, make_harness
from roles.planpath import render_grid
from roles.text import format_moves, parse_moves


def mas(**kw) -> Harness:
    return make_harness(PlanPath(), "mas", **kw)


def single(**kw) -> Harness:
    return make_harness(PlanPath(), "single", **kw)


def not_goal_cell(state: TeamState) -> tuple[int, int]:
    """A free cell other than the goal and '@' whose BFS path avoids the goal."""
    s = state.task_state
    g = s.grid
    for r in range(g.size):
        for c in range(g.size):
            if g.free((r, c)) and (r, c) not in (g.goal, s.pos):
                path = bfs_path(g, s.pos, (r, c))
                if path and simulate(g, s.pos, path)[0] != g.goal:
                    return r, c
    raise AssertionError("no such cell")


def away_move(state: TeamState) -> str:
    """A single move that does not reach the goal (legal or not)."""
    s = state.task_state
    for m in "UDLR":
        if simulate(s.grid, s.pos, (m,))[0] != s.grid.goal:
            return m
    raise AssertionError("every move reaches the goal")


# --- turn order and episode end -----------------------------------------------------------

def test_mas_turn_order_tool_then_plan():
    h = mas()
    assert h.role_names == ["tool", "plan"]
    s0 = h.reset(h.task.instance("train", 0))
    assert (s0.turn, s0.tool_output, s0.done) == (0, None, False)
    a = h.act_sync(s0, "tool", h.role("tool").demo(s0))
    assert a.state.turn == 0 and a.state.tool_output is not None and not a.state.done
    b = h.act_sync(a.state, "plan", away_move(a.state))
    assert b.state.turn == 1 and b.state.tool_output is None and not b.state.done


@pytest.mark.parametrize("max_turns", [1, 2, 4])
def test_mas_episode_ends_after_max_turns(max_turns):
    h = mas(max_turns=max_turns)
    state = h.reset(h.task.instance("train", 1))
    for turn in range(max_turns):
        for role in h.role_names:
            assert not state.done and state.turn == turn
            out = h.act_sync(state, role, "no idea")
            state = out.state
    assert state.done and state.turn == max_turns
    assert not h.task.is_solved(state.task_state)
    with pytest.raises(ValueError, match="finished episode"):
        h.act_sync(state, "tool", "0 0")


def test_single_turn_increments_after_every_action():
    h = single(max_turns=3)
    state = h.reset(h.task.instance("train", 2))
    turns = []
    while not state.done:
        state = h.act_sync(state, "plan", away_move(state)).state
        turns.append(state.turn)
    assert turns == [1, 2, 3]


@pytest.mark.parametrize("name", ["single", "mas"])
def test_episode_ends_when_solved(name):
    h = make_harness(PlanPath(), name, max_turns=4)
    state = h.reset(h.task.instance("val", 4))
    # turn 0: a wrong plan; turn 1: the oracle
    for role in h.role_names:
        state = h.act_sync(state, role, away_move(state) if role == "plan" else "0 0").state
    assert not state.done and state.turn == 1
    for role in h.role_names:
        out = h.act_sync(state, role, h.role(role).demo(state))
        state = out.state
    assert out.solved and state.done and state.turn == 2


def test_solved_mid_turn_ends_the_episode():
    """Solved is checked after every action, not only at the end of a turn."""
    task = PlanPath()
    reversed_team = Harness("rev", task, list(reversed(mas().roles)))  # plan first, then tool
    state = reversed_team.reset(task.instance("train", 5))
    out = reversed_team.act_sync(state, "plan", reversed_team.role("plan").demo(state))
    assert out.solved and out.state.done and out.state.turn == 0


def test_harness_rejects_bad_max_turns():
    with pytest.raises(ValueError, match="harness.max_turns=0; allowed: an integer >= 1$"):
        mas(max_turns=0)


# --- act is pure (reference defect 2) -----------------------------------------------------

@pytest.mark.parametrize("name", ["single", "mas"])
def test_act_does_not_mutate_its_input_state(name):
    h = make_harness(PlanPath(), name)
    for i in range(20):
        state = h.reset(h.task.instance("train", i))
        # reach turn 2 with some history (the defect showed from turn 2 on)
        for _ in range(2):
            for role in h.role_names:
                state = h.act_sync(state, role, away_move(state) if role == "plan" else "0 0").state
        assert state.turn == 2 and not state.done
        for role in h.role_names:
            snapshot = copy.deepcopy(state)
            good = h.act_sync(state, role, h.role(role).demo(state))
            bad = h.act_sync(state, role, away_move(state) if role == "plan" else "zzz")
            again = h.act_sync(state, role, h.role(role).demo(state))
            assert state == snapshot, "act() modified its input"
            assert good == again, "act() is not a function of (state, text)"
            assert good.state is not state and bad.state is not state
            if role == "plan":
                assert good.solved and good.team == 1.0 and h.task.is_solved(good.state.task_state)
                assert not bad.solved and bad.team == 0.0 and not h.task.is_solved(bad.state.task_state)
                assert good.state.task_state.pos == state.task_state.grid.goal
                assert bad.state.task_state.pos != state.task_state.grid.goal
            else:
                assert good.state.tool_output != bad.state.tool_output
                assert good.local == 1.0 and bad.local == h.parse_penalty
            # continue from a candidate: its state is the one its action was applied to
            state = bad.state


def test_team_reward_is_one_exactly_when_the_produced_state_is_solved():
    rng = random.Random(0)
    seen = set()
    for name in ["single", "mas"]:
        h = make_harness(PlanPath(), name)
        for i in range(60):
            state = h.reset(h.task.instance("train", i))
            while not state.done:
                for role in h.role_names:
                    r = h.role(role)
                    text = r.demo(state) if rng.random() < 0.25 else r.noise(state, rng)
                    out = h.act_sync(state, role, text)
                    solved = h.task.is_solved(out.state.task_state)
                    assert out.team == (1.0 if solved else 0.0) and out.solved == solved
                    seen.add(solved)
                    state = out.state
                    if state.done:
                        break
    assert seen == {True, False}


def test_plan_local_reward_is_its_task_step_reward():
    h = mas()
    state = h.reset(h.task.instance("train", 9))
    state = h.act_sync(state, "tool", h.role("tool").demo(state)).state
    text = h.role("plan").demo(state)
    out = h.act_sync(state, "plan", text)
    step = h.task.step(state.task_state, parse_moves(text).action)
    assert out.local == step.reward and out.info["terms"] == step.terms
    assert out.local == pytest.approx(2.0)  # goal + optimal + full progress


# --- tool agent ---------------------------------------------------------------------------

def test_tool_local_reward_is_one_iff_its_output_reaches_the_goal():
    h = mas()
    rewards = set()
    for i in range(30):
        state = h.reset(h.task.instance("train", i))
        g, pos = state.task_state.grid, state.task_state.pos
        for r in range(-1, g.size + 1):
            for c in range(-1, g.size + 1):
                out = h.act_sync(state, "tool", f"{r} {c}")
                moves = parse_moves(out.state.tool_output)
                reaches = moves.ok and simulate(g, pos, moves.action)[0] == g.goal
                assert out.local == (1.0 if reaches else 0.0)
                assert out.state.tool_output == out.info["tool_output"]
                assert out.team == 0.0  # the tool never moves the task
                assert out.state.task_state == state.task_state
                rewards.add(out.local)
        assert h.act_sync(state, "tool", h.role("tool").demo(state)).local == 1.0
        assert h.act_sync(state, "tool", "{} {}".format(*not_goal_cell(state))).local == 0.0
        wall = next(iter(g.walls), None)
        if wall is not None:
            out = h.act_sync(state, "tool", f"{wall[0]} {wall[1]}")
            assert out.state.tool_output == "none" and out.local == 0.0
    assert rewards == {0.0, 1.0}


def test_planner_sees_tool_output_of_the_same_turn_only():
    h = mas(max_turns=3)
    state = h.reset(h.task.instance("train", 11))
    assert "tool:" not in h.prompt(state, "plan")
    cell = not_goal_cell(state)
    after_tool = h.act_sync(state, "tool", f"{cell[0]} {cell[1]}").state
    out = after_tool.tool_output
    assert out and f"tool: {out}" in h.prompt(after_tool, "plan")
    assert "tool:" not in h.prompt(after_tool, "tool")  # the tool agent sees the grid only
    after_plan = h.act_sync(after_tool, "plan", away_move(after_tool)).state
    assert after_plan.turn == 1 and "tool:" not in h.prompt(after_plan, "plan")
    after_tool2 = h.act_sync(after_plan, "tool", h.role("tool").demo(after_plan)).state
    prompt = h.prompt(after_tool2, "plan")
    assert f"tool: {after_tool2.tool_output}" in prompt and f"tool: {out}\n" not in prompt


def test_single_planner_never_sees_a_tool():
    h = single()
    state = h.reset(h.task.instance("train", 0))
    assert "tool" not in h.prompt(replace(state, tool_output="U U"), "plan")


def test_prompt_shows_the_grid_and_the_last_attempt():
    h = single()
    state = h.reset(h.task.instance("train", 0))
    assert render_grid(state.task_state) in h.prompt(state, "plan")
    state = h.act_sync(state, "plan", away_move(state)).state
    assert f"last: {state.task_state.history[-1]}" in h.prompt(state, "plan")


def test_positions_line_names_the_agent_and_goal_cells():
    h = mas(positions=True)
    state = h.reset(h.task.instance("train", 3))
    s = state.task_state
    line = f"@ {s.pos[0]} {s.pos[1]} G {s.grid.goal[0]} {s.grid.goal[1]}"
    assert line in h.prompt(state, "tool") and line in h.prompt(state, "plan")
    assert line not in mas(positions=False).prompt(state, "tool")



@pytest.mark.parametrize("task_name", ["planpath", "sokoban"])
def test_field_pads_the_tool_answer_to_a_fixed_width_and_changes_nothing_else(task_name):
    plain, wide = (make_harness(envs.make(task_name), "mas", field=f) for f in (0, 12))
    for i in range(30):
        state = plain.reset(plain.task.instance("val", i))
        for text in (plain.role("tool").demo(state), "0 0", "1 2", "9 9"):
            a, b = plain.act_sync(state, "tool", text), wide.act_sync(state, "tool", text)
            assert (a.local, a.team, a.parse_ok) == (b.local, b.team, b.parse_ok)
            moves = parse_moves(a.state.tool_output)
            if moves.ok and len(moves.action) <= 12:  # padded to exactly 12 items
                assert b.state.tool_output.split() == list(moves.action) + ["."] * (12 - len(moves.action))
            else:  # "none", "here", or longer than the field: unchanged
                assert b.state.tool_output == a.state.tool_output
            # a plan agent that copies the whole field, filler included, takes the same action
            pa = plain.act_sync(a.state, "plan", a.state.tool_output)
            pb = wide.act_sync(b.state, "plan", b.state.tool_output)
            assert (pb.state.task_state, pb.local, pb.parse_ok) == (pa.state.task_state, pa.local, pa.parse_ok)
    # filler anywhere but at the end is not a move
    state = wide.reset(wide.task.instance("val", 0))
    assert not wide.role("plan").parse("R . R").ok and wide.role("plan").parse("R R . .\n").ok


# --- naive demonstrators (the weaker half of the warm-start mixture) -----------------------

@pytest.mark.parametrize("i", range(40))
def test_naive_plan_is_the_wall_blind_l_walk(i):
    h = single()
    state = h.reset(h.task.instance("train", i))
    s = state.task_state
    moves = parse_moves(h.role("plan").naive(state)).action
    assert len(moves) == abs(s.pos[0] - s.grid.goal[0]) + abs(s.pos[1] - s.grid.goal[1])
    vertical = [m for m in moves if m in "UD"]
    assert list(moves[:len(vertical)]) == vertical  # rows first, then columns
    end, _, illegal = simulate(s.grid, s.pos, moves)
    blocked = any((r, c) in s.grid.walls for r, c in _l_cells(s.pos, s.grid.goal))
    assert (end == s.grid.goal) == (not blocked) and illegal == blocked


def _l_cells(src, dst):
    (r0, c0), (r1, c1) = src, dst
    step_r, step_c = (1 if r1 > r0 else -1), (1 if c1 > c0 else -1)
    rows = [(r, c0) for r in range(r0 + step_r, r1 + step_r, step_r)] if r1 != r0 else []
    cols = [(r1, c) for c in range(c0 + step_c, c1 + step_c, step_c)] if c1 != c0 else []
    return rows + cols


@pytest.mark.parametrize("i", range(40))
def test_naive_tool_reads_the_goal_transposed(i):
    h = mas()
    state = h.reset(h.task.instance("train", i))
    r, c = state.task_state.grid.goal
    text = h.role("tool").naive(state)
    assert text == f"{c} {r}"
    out = h.act_sync(state, "tool", text)
    assert out.parse_ok
    if r == c:  # on the diagonal the mistake is harmless
        assert out.local == 1.0


def test_harness_names_lists_every_registered_harness():
    from roles import harness_names
    assert harness_names("planpath") == ["mas", "single"]
    assert harness_names("no-such-task") == []


# --- registry and errors ------------------------------------------------------------------

def test_unknown_harness_lists_available_ones():
    with pytest.raises(ValueError, match=r"unknown harness 'nope' for task 'planpath'; available: \['mas', 'single'\]"):
        make_harness(PlanPath(), "nope")


def test_unknown_role_and_tool():
    with pytest.raises(ValueError, match=r"roles: \['tool', 'plan'\]"):
        mas().role("coder")
    with pytest.raises(ValueError, match="allowed: goal, program"):
        mas(tool="calculator")


def test_register_taken_harness_raises():
    from roles.base import Family, harness_family, register_team
    original = harness_family("planpath")
    with pytest.raises(ValueError, match="task 'planpath' already has the planning harnesses"):
        register_team("planpath", Family("other", {}, ()))
    assert harness_family("planpath") is original


# --- tool=program (the program runs in the sandbox: tests/sandbox) -----------------------

def test_mas_program_tool_demo_solves_end_to_end():
    h = mas(tool="program", tool_timeout_s=5.0)
    for i in range(3):
        state = h.reset(h.task.instance("test", i))
        tool = h.act_sync(state, "tool", h.role("tool").demo(state))
        assert tool.parse_ok and tool.local == 1.0, tool.state.tool_output
        assert tool.state.tool_output == format_moves(h.task.oracle(state.task_state))
        # the plan agent answers with exactly what the program printed
        plan = h.act_sync(tool.state, "plan", tool.state.tool_output)
        assert plan.solved and plan.team == 1.0 and plan.state.done


def test_mas_program_tool_failures_are_reported_to_the_planner():
    h = mas(tool="program")
    state = h.reset(h.task.instance("train", 0))
    out = h.act_sync(state, "tool", "```python\nraise RuntimeError('nope')\n```")
    assert out.parse_ok and out.local == 0.0
    assert out.state.tool_output == "error: RuntimeError: nope"
    assert "tool: error: RuntimeError: nope" in h.prompt(out.state, "plan")


def test_mas_program_tool_timeout_is_reported_to_the_planner():
    h = mas(tool="program", tool_timeout_s=0.5)
    state = h.reset(h.task.instance("train", 0))
    t = time.monotonic()
    out = h.act_sync(state, "tool", "```python\nwhile True: pass\n```")
    assert time.monotonic() - t < 3
    assert out.parse_ok and out.local == 0.0 and out.state.tool_output == "error: timeout"


def test_program_tool_refuses_to_build_without_the_sandbox(monkeypatch):
    import sandbox
    import sandbox.bwrap as bw

    def missing():
        raise bw.SandboxUnavailable("no bwrap")

    monkeypatch.setattr(bw, "bwrap_path", missing)
    monkeypatch.setattr(sandbox, "_probe", sandbox._probe.__wrapped__)
    with pytest.raises(sandbox.SandboxUnavailable, match="only in marl's sandbox"):
        mas(tool="program")
    mas(tool="goal")  # the query tools run no program and need no sandbox
