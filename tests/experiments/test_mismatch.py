"""The mismatch experiment end to end on a minute-sized tiny model: one command trains every arch,
evaluates each in every deploy setting, aggregates into results.csv/.md and a heatmap; a rerun
skips finished cells; a cell trained with another config is never overwritten."""
from __future__ import annotations

import csv
import json
import math

import pytest

from pathlib import Path

from experiments.mismatch import aggregate as agg


@pytest.mark.e2e
def test_every_cell_and_deploy_setting_is_reported(mismatch_experiment):
    out, _, _ = mismatch_experiment
    rows = list(csv.DictReader(open(out / "results.csv")))
    got = {(r["arch"], r["deploy"]) for r in rows}
    expected = {(a, d) for a in ("single", "mas_shared", "mas_per_role") for d in ("single", "mas")}
    expected |= {("mas_per_role", "mas_swapped"), ("warm_start", "single"), ("warm_start", "mas")}
    assert got == expected
    for r in rows:
        lo, mean, hi = float(r["ci_lo"]), float(r["mean"]), float(r["ci_hi"])
        assert 0.0 <= lo <= mean <= hi <= 1.0 and int(r["n"]) == 4 and int(r["seeds"]) == 1
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "deploy team, roles swapped" in (out / "results.md").read_text()
    swapped = json.loads((out / "mas_per_role" / "seed0" / "cell.json").read_text())["deploy"]["mas_swapped"]
    assert swapped["roles"] == {"tool": "plan", "plan": "tool"}  # each role played by the other's policy


@pytest.mark.e2e
def test_rerun_skips_finished_cells(mismatch_experiment, mismatch_cmd):
    out, cache, _ = mismatch_experiment
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("*/seed0/cell.json")}
    proc = mismatch_cmd(out, cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("finished before, skipped") == 3
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed0/cell.json")} == stamp


@pytest.mark.e2e
def test_a_cell_trained_otherwise_is_not_overwritten(mismatch_experiment, mismatch_cmd):
    out, cache, _ = mismatch_experiment
    proc = mismatch_cmd(out, cache, "arch=single", "algo.alpha=0.5")
    assert proc.returncode != 0
    assert "trained with another config (differs in: algo.alpha)" in proc.stderr


def test_summary_statistics():
    s = agg.summarize([0.5, 0.6, 0.7], n=100)
    assert s["mean"] == pytest.approx(0.6)
    assert s["ci_hi"] - s["mean"] == pytest.approx(4.303 * 0.1 / math.sqrt(3))  # t(2) over seeds
    assert agg.summarize([0.8, 0.9, 1.0], n=100)["ci_hi"] == 1.0  # clipped to a probability
    one = agg.summarize([0.5], n=100)
    assert (one["ci_lo"], one["ci_hi"]) == pytest.approx((0.404, 0.596), abs=1e-3)  # Wilson


@pytest.mark.e2e
def test_a_killed_cell_resumes_from_its_checkpoint(mismatch_experiment, mismatch_cmd):
    """A cell killed after training but before its evaluations (no cell.json, eval.json without
    the final figures) resumes from its last checkpoint instead of training again."""
    out, cache, _ = mismatch_experiment
    cell = out / "single" / "seed0"
    (cell / "cell.json").unlink()
    ev = json.loads((cell / "eval.json").read_text())
    del ev["final"]
    (cell / "eval.json").write_text(json.dumps(ev))
    n_rows = len((cell / "metrics.jsonl").read_text().splitlines())
    proc = mismatch_cmd(out, cache, "arch=single")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout + proc.stderr
    assert (cell / "cell.json").exists() and "final" in json.loads((cell / "eval.json").read_text())
    trained = [json.loads(r) for r in (cell / "metrics.jsonl").read_text().splitlines()]
    assert len(trained) == n_rows + 1  # only the final test row is added: no step trained twice


def test_the_papers_setting_composes(tmp_path, monkeypatch):
    """`python -m experiments.mismatch model=qwen3_1.7b ...` is a valid training config (on a
    machine with a GPU and the weights: both stood in for here)."""
    import torch
    from hydra import compose, initialize_config_dir

    from marl.config import run_settings
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "conf"), version_base=None):
        for arch in ("single", "mas_shared", "mas_per_role", "mas_lora"):
            cfg = compose("mismatch", overrides=[f"arch={arch}", "model=qwen3_1.7b", f"model.path={tmp_path}",
                                                 "device=cuda"])
            run_settings(cfg)
            assert cfg.model.name == "qwen3_1.7b" and cfg.harness.tool == "program"
            # the model's own budget, not the tiny one nor the base config's (a regression:
            # both used to override it silently)
            assert (cfg.train.lr, cfg.train.steps, cfg.train.temperature) == (5e-6, 200, 1.5)


def test_every_task_composes_as_the_experiment_task():
    """`python -m experiments.mismatch exp=<task>` keeps the task's own settings in every arch."""
    from hydra import compose, initialize_config_dir

    from marl.config import run_settings
    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        for exp in sorted(p.stem for p in (conf / "exp").glob("*.yaml")):
            plain = compose("config", overrides=[f"+exp={exp}"])
            for arch in ("single", "mas_shared", "mas_per_role", "mas_lora"):
                cfg = compose("mismatch", overrides=[f"exp={exp}", f"arch={arch}"])
                run_settings(cfg)
                assert cfg.env == plain.env and cfg.model == plain.model  # the plain command's cached warm start
                assert {k: v for k, v in cfg.harness.items() if k != "name"} == \
                    {k: v for k, v in plain.harness.items() if k != "name"}
                assert cfg.mismatch.out.endswith(f"{plain.env.name}-tiny")


def test_per_role_and_lora_cells_are_also_deployed_with_roles_swapped():
    from hydra import compose, initialize_config_dir

    from experiments.mismatch.__main__ import deploy_settings, mismatch_settings
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "conf"), version_base=None):
        got = {arch: deploy_settings(*mismatch_settings(compose("mismatch", overrides=[f"arch={arch}"])))
               for arch in ("single", "mas_shared", "mas_per_role", "mas_lora")}
    assert got["single"] == got["mas_shared"] == [(False, ["single", "mas"])]
    assert got["mas_per_role"] == got["mas_lora"] == [(False, ["single", "mas"]), (True, ["mas"])]


@pytest.mark.e2e
def test_a_cell_killed_at_any_point_resumes_to_the_same_cell(mismatch_experiment, tmp_path, monkeypatch):
    """A cell killed in its first training step (long before its first periodic checkpoint: it
    resumes from the warm start's), then killed again during marl.evaluate after training (the
    rerun evaluates without training again), ends as the uninterrupted experiment's cell."""
    from hydra import compose, initialize_config_dir

    from experiments.mismatch import __main__ as mm
    from marl import train
    out, cache, _ = mismatch_experiment
    small = ["logger=none", "model.sft.steps=30", "model.sft.instances=300", "train.steps=2",  # tests/conftest.py's
             "train.problems_per_step=3", "train.eval_every=2", "eval.n_val=4", "eval.n_test=4", "algo.k=2", "threads=1"]
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "conf"), version_base=None):
        cfg = compose("mismatch", overrides=[f"mismatch.out={tmp_path}", f"cache_dir={cache}", *small, "seed=0",
                                             "arch=single"])
    s, m = mm.mismatch_settings(cfg)
    cell = tmp_path / "single" / "seed0"
    real = train.write_traces

    def killed_in_step_1(r, step, batch, metrics):
        if step == 0:
            raise KeyboardInterrupt("killed")
        real(r, step, batch, metrics)

    def killed(*a, **k):
        raise KeyboardInterrupt("killed")

    for kill in (lambda: monkeypatch.setattr(train, "write_traces", killed_in_step_1),
                 lambda: monkeypatch.setattr(mm.marl_evaluate, "run", killed)):
        kill()
        with pytest.raises(KeyboardInterrupt):
            mm.run_cell(s, m, cell, "single")
        monkeypatch.undo()
    assert (cell / "checkpoints" / "latest").read_text() == "step_000002" and not (cell / "cell.json").exists()
    trained = (cell / "metrics.jsonl").read_text()
    mm.run_cell(s, m, cell, "single")
    assert (cell / "metrics.jsonl").read_text() == trained, "no step trained again"
    whole = out / "single" / "seed0"
    assert json.loads((cell / "cell.json").read_text()) == json.loads((whole / "cell.json").read_text())
    drop = ("timing/", "system/")
    a, b = ([{k: v for k, v in json.loads(r).items() if not k.startswith(drop)}
             for r in (d / "metrics.jsonl").read_text().splitlines()] for d in (whole, cell))
    assert a[:len(b)] == b  # the whole cell may hold one more final test row: the test above evaluates it again
