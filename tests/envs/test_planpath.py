"""Plan-Path task: seeded instances, split disjointness, the BFS oracle, every reward term."""
from __future__ import annotations

import copy
import random
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import envs
import envs.base
from envs.grid import MOVES
from envs.planpath import Grid, PlanPath, PlanPathState, bfs_path, distance, simulate

N_TRAIN, N_VAL, N_TEST = 3000, 300, 300


def reference_distance(grid: Grid, src, dst) -> int | None:
    """Independent BFS (distances only) to check the oracle against."""
    if not (grid.free(src) and grid.free(dst)):
        return None
    dist = {src: 0}
    queue = deque([src])
    while queue:
        cell = queue.popleft()
        if cell == dst:
            return dist[cell]
        for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            nxt = (cell[0] + dr, cell[1] + dc)
            if nxt not in dist and grid.free(nxt):
                dist[nxt] = dist[cell] + 1
                queue.append(nxt)
    return None


@pytest.fixture(scope="module")
def task() -> PlanPath:
    return PlanPath()


@pytest.fixture(scope="module")
def splits(task) -> dict[str, list[Grid]]:
    n = {"train": N_TRAIN, "val": N_VAL, "test": N_TEST}
    return {split: [task.instance(split, i) for i in range(k)] for split, k in n.items()}


def grid(rows: list[str]) -> Grid:
    """A hand-made grid: '#' wall, 'S' start, 'G' goal, '.' free."""
    walls = frozenset((r, c) for r, row in enumerate(rows) for c, ch in enumerate(row) if ch == "#")
    find = lambda ch: next((r, c) for r, row in enumerate(rows) for c, x in enumerate(row) if x == ch)
    return Grid(len(rows), walls, find("S"), find("G"))


def start(g: Grid, task: PlanPath | None = None) -> PlanPathState:
    return (task or PlanPath()).initial_state(g)


# --- seeded instances ---------------------------------------------------------------------

def test_instance_is_a_pure_function_of_config_split_and_index():
    a, b = PlanPath(seed=3), PlanPath(seed=3)
    for split in envs.SPLITS:
        for i in range(50):
            assert a.instance(split, i) == b.instance(split, i)
            assert a.instance(split, i).key == a.instance(split, i).key


def test_different_task_seed_gives_a_different_stream():
    a = [PlanPath(seed=0).instance("train", i).key for i in range(100)]
    b = [PlanPath(seed=1).instance("train", i).key for i in range(100)]
    assert a != b
    assert sum(x == y for x, y in zip(a, b)) < 10  # not the same stream shifted or mostly equal


def test_different_indices_give_different_instances(splits):
    keys = [g.key for g in splits["train"][:200]]
    assert len(set(keys)) > 190


def test_instances_respect_config():
    task = PlanPath(size=7, wall_frac=0.3, min_dist=4)
    for i in range(100):
        g = task.instance("train", i)
        assert g.size == 7 and g.start != g.goal
        assert g.free(g.start) and g.free(g.goal)
        assert reference_distance(g, g.start, g.goal) >= 4
        assert all(0 <= r < 7 and 0 <= c < 7 for r, c in g.walls)


def test_unknown_split_raises(task):
    with pytest.raises(ValueError, match="train, val, test"):
        task.instance("validation", 0)


# --- splits -------------------------------------------------------------------------------

def test_splits_are_disjoint_by_content(splits):
    keys = {split: {g.key for g in grids} for split, grids in splits.items()}
    assert not keys["train"] & keys["val"]
    assert not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]


def test_every_instance_hashes_into_the_split_it_was_drawn_for(splits):
    for split, grids in splits.items():
        assert all(envs.split_of(g.key) == split for g in grids), split


def test_split_of_is_a_function_of_content_only():
    g = PlanPath(seed=5).instance("val", 7)
    same = Grid(g.size, frozenset(g.walls), g.start, g.goal)  # rebuilt, not the same object
    assert same.key == g.key and envs.split_of(same.key) == "val"


# --- oracle -------------------------------------------------------------------------------

def test_bfs_oracle_solves_every_generated_instance(task, splits):
    for grids in splits.values():
        for g in grids:
            path = task.oracle(task.initial_state(g))
            end, executed, illegal = simulate(g, g.start, path)
            assert end == g.goal and not illegal and executed == len(path)
            assert len(path) == distance(g, g.start, g.goal) == reference_distance(g, g.start, g.goal)


@pytest.mark.parametrize("size", [3, 10])
def test_bfs_oracle_is_optimal_for_other_sizes(size):
    task = PlanPath(size=size)
    for i in range(100):
        g = task.instance("train", i)
        path = task.oracle(task.initial_state(g))
        assert simulate(g, g.start, path)[0] == g.goal
        assert len(path) == reference_distance(g, g.start, g.goal)
        res = task.step(task.initial_state(g), path)
        assert res.solved and res.terms["optimal"] == task.rewards.optimal


def test_bfs_path_unreachable_is_none():
    g = grid(["S#.", "##.", "..G"])
    assert bfs_path(g, g.start, g.goal) is None and distance(g, g.start, g.goal) is None


# --- rewards ------------------------------------------------------------------------------
OPEN = ["S.G", "...", "..."]  # d_start = 2


def test_goal_and_optimal_when_the_shortest_path_is_taken():
    task = PlanPath()
    res = task.step(start(grid(OPEN)), ("R", "R"))
    assert res.solved and res.state.pos == (0, 2)
    assert res.terms == {"goal": 1.0, "optimal": 0.5, "invalid": 0.0, "progress": 0.5}
    assert res.reward == pytest.approx(2.0)


def test_goal_without_optimal_after_a_detour():
    task = PlanPath()
    res = task.step(start(grid(OPEN)), ("D", "R", "R", "U"))
    assert res.solved
    assert res.terms["goal"] == 1.0 and res.terms["optimal"] == 0.0
    assert res.terms["progress"] == pytest.approx(0.5)


def test_optimal_counts_the_whole_episode_not_the_step():
    task = PlanPath()
    s = start(grid(OPEN))
    first = task.step(s, ("R",))
    assert not first.solved and first.terms["goal"] == 0.0 and first.terms["optimal"] == 0.0
    second = task.step(first.state, ("R",))  # 2 moves over the episode == BFS distance
    assert second.terms["goal"] == 1.0 and second.terms["optimal"] == 0.5
    # wandering first: the final step is a shortest path from where it stands, but the episode is not
    wander = task.step(task.step(s, ("D",)).state, ("U", "R", "R"))
    assert wander.solved and wander.terms["optimal"] == 0.0
    wander2 = task.step(task.step(s, ("D",)).state, ("R", "R", "U"))
    assert wander2.solved and wander2.terms["optimal"] == 0.0


def test_no_goal_no_optimal_even_with_distance_many_moves():
    res = PlanPath().step(start(grid(OPEN)), ("D", "R"))  # 2 moves, as many as d_start
    assert not res.solved and res.terms["goal"] == 0.0 and res.terms["optimal"] == 0.0


def test_moves_after_the_goal_are_ignored():
    task = PlanPath()
    res = task.step(start(grid(OPEN)), ("R", "R", "U", "L", "X"))  # U is off-grid, X unknown
    assert res.solved and res.info["executed"] == 2 and not res.info["illegal"]
    assert res.terms["invalid"] == 0.0 and res.terms["optimal"] == 0.5


def test_invalid_is_charged_once_and_the_sequence_stops_at_the_first_illegal_move():
    task = PlanPath()
    g = grid(["S..", ".#.", "..G"])  # wall in the middle, d_start = 4
    res = task.step(start(g), ("R", "D", "D", "R"))  # R ok, D into the wall: stop at (0, 1)
    assert res.state.pos == (0, 1) and res.info == {"illegal": True, "executed": 1}
    assert res.terms["invalid"] == -0.2 and not res.solved
    assert res.state.moves_used == 1
    many = task.step(start(g), ("U", "U", "U", "L"))  # off the border, four times
    assert many.state.pos == g.start and many.terms["invalid"] == -0.2
    assert many.terms["progress"] == 0.0
    assert many.reward == pytest.approx(-0.2)
    # a legal sequence that *would* reach the goal after the illegal move does not
    blocked = task.step(start(g), ("U", "R", "R", "D", "D"))
    assert blocked.state.pos == g.start and not blocked.solved


def test_progress_is_charged_for_moving_away():
    task = PlanPath()
    g = grid(["S..", "...", "..G"])  # d_start = 4
    away = task.step(task.step(start(g), ("R", "D")).state, ("L",))
    assert away.terms["progress"] == pytest.approx(0.5 * (2 - 3) / 4)
    assert away.reward < 0


def test_wandering_back_and_forth_earns_nothing():
    task = PlanPath()
    s = start(grid(["S..", "...", "..G"]))
    res = task.step(s, ("R", "L", "D", "U", "R", "L"))
    assert res.state.pos == s.pos and res.terms["progress"] == 0.0 and res.reward == 0.0


def test_reward_terms_follow_config():
    task = PlanPath(rewards={"goal": 2.0, "optimal": 0.25, "invalid": -1.0, "progress": 1.0})
    g = grid(["S..", ".#.", "..G"])
    ok = task.step(start(g, task), ("R", "R", "D", "D"))
    assert ok.terms == {"goal": 2.0, "optimal": 0.25, "invalid": 0.0, "progress": 1.0}
    bad = task.step(start(g, task), ("L",))
    assert bad.terms["invalid"] == -1.0


moves_st = st.lists(st.lists(st.sampled_from(sorted(MOVES)), max_size=8), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(index=st.integers(0, 10_000), episode=moves_st)
def test_progress_is_potential_based_and_terms_sum_to_reward(index, episode):
    task = PlanPath()
    g = task.instance("train", index)
    s = task.initial_state(g)
    d_start = reference_distance(g, g.start, g.goal)
    total_progress = 0.0
    for action in episode:
        d_before = reference_distance(g, s.pos, g.goal)
        res = task.step(s, tuple(action))
        d_after = reference_distance(g, res.state.pos, g.goal)
        assert res.terms["progress"] == pytest.approx(0.5 * (d_before - d_after) / d_start)
        assert res.reward == pytest.approx(sum(res.terms.values()))
        assert set(res.terms) == {"goal", "optimal", "invalid", "progress"}
        assert res.solved == (res.state.pos == g.goal) == task.is_solved(res.state)
        total_progress += res.terms["progress"]
        s = res.state
        if res.solved:
            break
    d_end = reference_distance(g, s.pos, g.goal)
    assert total_progress == pytest.approx(0.5 * (d_start - d_end) / d_start)


# --- purity and errors --------------------------------------------------------------------

def test_step_never_mutates_its_input_state(task):
    rng = random.Random(0)
    for i in range(50):
        s = task.initial_state(task.instance("train", i))
        s = task.step(s, tuple(rng.choice("UDLR") for _ in range(2))).state  # some history
        snapshot = copy.deepcopy(s)
        fields = (s.grid, s.pos, s.moves_used, s.steps, s.history)
        a = task.step(s, tuple(rng.choice("UDLR") for _ in range(3)))
        b = task.step(s, task.oracle(s))
        assert s == snapshot and (s.grid, s.pos, s.moves_used, s.steps, s.history) == fields
        assert a.state is not s and b.state is not s
        assert a.state.steps == b.state.steps == s.steps + 1
        assert a.state.history[:-1] == b.state.history[:-1] == s.history
        assert b.solved


@pytest.mark.parametrize("action", [("X",), ("R", "up"), ("u",), ("",)])
def test_unknown_move_raises(action):
    with pytest.raises(ValueError, match="allowed: U, D, L, R"):
        PlanPath().step(start(grid(["S..", "...", "..G"])), action)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"size": 1}, r"size must be >= 2"),
    ({"size": -3}, r"size must be >= 2"),
    ({"wall_frac": 0.7}, r"wall_frac must be in \[0, 0\.7\)"),
    ({"wall_frac": -0.1}, r"wall_frac must be in \[0, 0\.7\)"),
])
def test_bad_constructor_args_name_the_allowed_range(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PlanPath(**kwargs)


# --- registry -----------------------------------------------------------------------------

def test_make_unknown_task_lists_registered_tasks():
    with pytest.raises(ValueError, match="registered tasks: .*planpath") as err:
        envs.make("nope")
    assert "'nope'" in str(err.value)


def test_make_passes_config():
    task = envs.make("planpath", size=6, seed=2)
    assert isinstance(task, PlanPath) and task.size == 6 and task.seed == 2
    assert "planpath" in envs.registered()


def test_register_taken_name_raises_and_keeps_the_original():
    with pytest.raises(ValueError, match="already registered"):
        envs.register("planpath", lambda **kw: None)
    assert isinstance(envs.make("planpath"), PlanPath)


def test_register_new_name(monkeypatch):
    monkeypatch.setattr(envs.base, "_REGISTRY", dict(envs.base._REGISTRY))
    envs.register("planpath_big", lambda **kw: PlanPath(size=9, **kw))
    assert envs.make("planpath_big").size == 9
    assert "planpath_big" in envs.registered()
