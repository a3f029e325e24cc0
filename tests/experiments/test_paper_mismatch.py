"""experiments.paper's mismatch table: experiments.mismatch's cells per task, the paper's value beside
the paper's own experiment only, its conclusions checked on every task."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from experiments.paper import __main__ as paper
from experiments.paper import mismatch_table as mt

# (arch, deploy) -> success of one seed; the paper's shape: team-trained best in the team
SHAPE = {("single", "single"): 0.55, ("single", "mas"): 0.56, ("mas_shared", "single"): 0.52,
         ("mas_shared", "mas"): 0.98, ("mas_per_role", "single"): 0.60, ("mas_per_role", "mas"): 0.97,
         ("mas_per_role", "mas_swapped"): 0.50}


def write_task(root: Path, task: str, env: str, model: str, shape=SHAPE, seeds=(0, 1), record=True) -> None:
    for arch in sorted({a for a, _ in shape}):
        for s in seeds:
            cell = root / "mismatch" / task / arch / f"seed{s}"
            cell.mkdir(parents=True)
            c = {"arch": arch, "seed": s, "harness": "mas", "policy": "shared", "n": 100,
                 "warm_start": {"single": 0.45, "mas": 0.50},
                 "deploy": {d: {"success": v + 0.01 * s} for (a, d), v in shape.items() if a == arch}}
            if record:
                c |= {"env": env, "model": model}
            else:  # a cell written before cell.json recorded its env and model: its run's config says
                (cell / "config.yaml").write_text(yaml.safe_dump({"env": {"name": env}, "model": {"name": model}}))
            (cell / "cell.json").write_text(json.dumps(c))


def test_the_papers_value_stands_beside_its_own_experiment_only(tmp_path):
    write_task(tmp_path, "planning", "planpath10", "qwen3_1.7b")
    write_task(tmp_path, "sudoku", "sudoku", "qwen3_1.7b")
    rows = mt.aggregate(tmp_path)
    paper = {(r["task"], r["arch"], r["deploy"]): r["paper"] for r in rows}
    assert paper[("planning", "mas_per_role", "mas")] == pytest.approx(0.96)
    assert paper[("planning", "mas_per_role", "mas_swapped")] == pytest.approx(0.06)
    assert paper[("planning", "single", "single")] == pytest.approx([0.11, 0.145])
    assert paper[("planning", "warm_start", "single")] == pytest.approx(0.05)
    assert paper[("planning", "mas_shared", "mas")] is None  # the paper has no such cell
    assert all(v is None for (task, *_), v in paper.items() if task == "sudoku")  # not the paper's test set
    md = (tmp_path / "table_mismatch.md").read_text()
    assert "| Plan-Path | trained team, per-role | deploy team | 97.5% [91%, 100%] (0.97 0.98) | 96.0% |" in md
    assert "| Plan-Path | trained single | deploy single | 55.5%" in md and "| 11.0%-14.5% |" in md
    assert (tmp_path / "table_mismatch.png").stat().st_size > 0 and (tmp_path / "table_mismatch.csv").exists()


def test_a_tiny_model_stands_alone_labelled_as_the_analogue(tmp_path):
    write_task(tmp_path, "planning", "planpath", "tiny", record=False)
    rows = mt.aggregate(tmp_path)
    assert {r["column"] for r in rows} == {"planpath (tiny analogue)"}
    assert all(r["paper"] is None for r in rows)
    assert {r["model"] for r in rows} == {"tiny"}  # read from the cells' config.yaml


def test_the_papers_conclusions_are_checked_on_every_task(tmp_path):
    write_task(tmp_path, "planning", "planpath", "tiny")
    write_task(tmp_path, "sudoku", "sudoku", "tiny", shape={**SHAPE, ("mas_per_role", "mas_swapped"): 0.99})
    write_task(tmp_path, "math", "math", "tiny", shape={k: v for k, v in SHAPE.items() if k[0] != "single"})
    pats = {p["id"]: p for p in mt.patterns(mt.aggregate(tmp_path))}
    assert (pats["team_trained_best_in_team"]["holds"], pats["team_trained_best_in_team"]["tasks"]) == (3, 3)
    assert pats["single_trained_below_team_trained"]["tasks"] == 2  # math has no single-trained cell
    assert pats["swapped_roles_collapse"] == {**pats["swapped_roles_collapse"], "holds": 2, "tasks": 3,
                                              "fails_on": ["sudoku"]}
    assert "| 2 of 3 tasks (not on sudoku) |" in (tmp_path / "table_mismatch.md").read_text()


def test_one_task_directory_of_two_experiments_is_refused(tmp_path):
    write_task(tmp_path, "planning", "planpath", "tiny")
    write_task(tmp_path, "planning", "planpath10", "qwen3_1.7b", seeds=(2,))
    with pytest.raises(ValueError, match=r"mismatch/planning: cells of several \(env, model\) pairs"):
        mt.aggregate(tmp_path)
    with pytest.raises(ValueError, match="no finished mismatch cells"):
        mt.aggregate(tmp_path / "empty")


def test_without_out_the_mismatch_runs_go_under_the_models_paper_directory():
    own, rest = paper.parse(["table=mismatch", "model=qwen3_1.7b", "tasks=[planning,sudoku]"])
    cmds = paper.mismatch_commands(own, rest)
    assert [c[-2] for c in cmds] == [f"mismatch.out='{paper.ROOT}/runs/paper/qwen3_1.7b/mismatch/{t}'"
                                     for t in ("planning", "sudoku")]
    own, rest = paper.parse(["table=mismatch", "out=rel/dir"])
    assert paper.mismatch_commands(own, rest)[0][-1] == f"mismatch.out='{Path('rel/dir').resolve()}/mismatch/planning'"
