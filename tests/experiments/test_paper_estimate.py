"""experiments.paper.estimate: a full table's compute extrapolated from a short run's cells."""
from __future__ import annotations

import json

import pytest
import yaml

from experiments.paper import estimate as est


def short_cell(root, row, task, seed, steps=2, trained=True, eval_every=20):
    """A finished cell whose metrics say: warm-start eval 3 s; each step 2 s of training; the last
    step also validates, 5 s; tokens 100 and samples 10 a step; wall 40 s in all (fixed 40-3-9=28 s)."""
    d = root / "cells" / row / task / f"seed{seed}"
    d.mkdir(parents=True)
    rows = [{"step": 0, "timing/eval": 3.0}]
    for s in range(1, steps + 1):
        r = {"step": s, "timing/step": 2.0, "train/response_tokens": 100, "train/samples": 10}
        if s == steps:
            r |= {"timing/eval": 5.0, "timing/step": 7.0}
        rows.append(r)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "config.yaml").write_text(yaml.safe_dump({"train": {"eval_every": eval_every, "steps": steps}}))
    wall = 40.0 if trained else 6.0
    (d / "cell.json").write_text(json.dumps({"row": row, "task": task, "seed": seed, "trained": trained,
                                             "compute": {"wall_s": wall, "devices": 8.0, "device": "GPU",
                                                         "device_hours": 8 * wall / 3600}}))


def test_a_trained_cell_is_extrapolated_from_its_step_and_validation_times(tmp_path):
    short_cell(tmp_path, "mas_shared", "planning", 0)
    short_cell(tmp_path, "mas", "planning", 0, trained=False)
    cells, total = est.estimate(tmp_path, 200)
    trained = next(c for c in cells if c["row"] == "mas_shared")
    # fixed 28 s + warm eval 3 s + 200 steps x 2 s + 10 validations (every 20) x 5 s
    assert trained["est_wall_s"] == pytest.approx(28 + 3 + 400 + 50)
    assert trained["est_device_hours"] == pytest.approx(8 * 481 / 3600)
    assert (trained["est_tokens"], trained["est_samples"]) == (20000, 2000)
    assert total["wall_s"] == pytest.approx(481 + 6)  # the untrained cell costs what it cost
    _, three = est.estimate(tmp_path, 200, seeds=3)
    assert three["device_hours"] == pytest.approx(3 * 8 * 481 / 3600 + 8 * 6 / 3600)


def test_validations_are_counted_as_marl_train_runs_them():
    assert [est.n_evals(s, 20) for s in (5, 20, 21, 60, 200)] == [1, 1, 2, 3, 10]


def test_steps_per_task_and_their_refusals(tmp_path):
    short_cell(tmp_path, "single_grpo", "planning", 0)
    short_cell(tmp_path, "single_grpo", "code", 0)
    cells, _ = est.estimate(tmp_path, est.parse_steps("planning=60,code=100"))
    assert {c["task"]: c["steps"] for c in cells} == {"planning": 60, "code": 100}
    with pytest.raises(ValueError, match="--steps names no step count for task 'code'"):
        est.estimate(tmp_path, {"planning": 60})
    with pytest.raises(SystemExit, match="allowed: one step count"):
        est.parse_steps("planning:60")
    with pytest.raises(ValueError, match="no finished cells"):
        est.estimate(tmp_path / "none", 60)


def test_the_cli_writes_the_estimate_beside_the_short_run(tmp_path, capsys):
    short_cell(tmp_path, "mas_per_role", "sudoku", 1)
    est.main([str(tmp_path), "--steps", "200", "--seeds", "3"])
    md = (tmp_path / "estimate_main.md").read_text()
    assert "| MAS + AT-GRPO, per role | sudoku | 1 | 2, 40 s | 31 s | 2.0 s | 5.0 s | 200 | 8.0 min | 1.069 GPU |" in md
    assert "Total for 3 seed(s) of the trained rows: 0.40 h of cell wall time, 3.21 GPU-hours." in md


def test_a_resumed_cell_is_refused(tmp_path):
    short_cell(tmp_path, "mas_shared", "planning", 0)
    f = tmp_path / "cells/mas_shared/planning/seed0/cell.json"
    c = json.loads(f.read_text())
    c["compute"]["attempts"] = 2
    f.write_text(json.dumps(c))
    with pytest.raises(ValueError, match="a resumed cell \\(2 attempts\\) cannot be split"):
        est.estimate(tmp_path, 200)
