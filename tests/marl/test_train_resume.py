"""Every kill of marl.train resumable, on the small planning run: killed (or out of disk) before
its first periodic checkpoint, it resumes from the warm start's checkpoint (step 0) to the same
metrics, traces and eval.json as the run never interrupted; a resume continues in the run's own
directory whatever directory it is given."""
from __future__ import annotations

import errno
import json
import shutil
import sys

import pytest
import torch

from marl import train
from marl.engine.local import LocalEngine
from test_runs import snapshot
from test_train_smoke import CONF, SMALL, cfg_for, kill_in_step, rows

DROP = ("timing/", "system/")


def same_run(a, b) -> None:
    """Two run directories hold the same run: metrics (less timings), eval.json and traces."""
    strip = [[{k: v for k, v in r.items() if not k.startswith(DROP)} for r in rows(d)] for d in (a, b)]
    assert strip[0] == strip[1] and any("train/grad_norm" in r for r in strip[0])
    assert (a / "eval.json").read_text() == (b / "eval.json").read_text()
    for f in sorted((a / "traces").iterdir()):
        assert f.read_text() == (b / "traces" / f.name).read_text(), f.name


def kill_in_step_1(monkeypatch):
    kill_in_step(monkeypatch, 1)


def full_disk_at_the_first_checkpoint(monkeypatch):
    real = LocalEngine.save

    def save(self, directory):
        if "step_000000" not in str(directory):  # the warm start's fits; the first periodic one does not
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, directory)
    monkeypatch.setattr(LocalEngine, "save", save)


@pytest.mark.e2e  # two training runs (the unit test of a full disk: tests/marl/test_checkpoint.py)
@pytest.mark.parametrize("stop", [kill_in_step_1, full_disk_at_the_first_checkpoint],
                         ids=["killed-in-step-1", "disk-full-at-step-2s-checkpoint"])
def test_a_run_stopped_before_its_first_periodic_checkpoint_resumes_exactly(tmp_path, monkeypatch, trained_run, stop):
    """Before, such a run could neither resume ("no checkpoint found there") nor start again
    ("already holds a run"): the warm start was saved as `best` only."""
    whole = trained_run(cfg_for(tmp_path))  # train.checkpoint_every=1: the same run, checkpointed each step
    run = tmp_path / "run"
    args = ["train.checkpoint_every=20"]
    stop(monkeypatch)
    with pytest.raises((KeyboardInterrupt, RuntimeError)):
        train.run(cfg_for(tmp_path, *args), run)
    monkeypatch.undo()
    assert (run / "checkpoints" / "latest").read_text() == "step_000000"
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")], "no temporary left"
    before = snapshot(run)
    with pytest.raises(ValueError, match="already holds a run; continue it with resume="):
        train.run(cfg_for(tmp_path, *args), run)
    assert snapshot(run) == before
    train.run(cfg_for(tmp_path, *args, f"resume={run}"), run)
    same_run(whole, run)


@pytest.mark.e2e
def test_a_run_without_warm_start_evaluation_resumes_from_step_0(tmp_path, monkeypatch):
    args = ["eval.warm_start=false", "train.checkpoint_every=20"]
    train.run(cfg_for(tmp_path, *args), tmp_path / "whole")
    kill_in_step_1(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg_for(tmp_path, *args), tmp_path / "killed")
    monkeypatch.undo()
    ckpt = tmp_path / "killed" / "checkpoints"
    assert (ckpt / "latest").read_text() == "step_000000" and not (ckpt / "best").exists()
    train.run(cfg_for(tmp_path, *args, f"resume={tmp_path / 'killed'}"), tmp_path / "killed")
    same_run(tmp_path / "whole", tmp_path / "killed")


@pytest.mark.e2e  # trains on from the shared run
def test_a_resume_continues_in_the_runs_own_directory(tmp_path, trained_run):
    """Before, `resume=<run>` with another directory (Hydra's default hydra.run.dir) trained
    there: no `best`, no warm start, the final weights tested under another `selected_step`."""
    run = tmp_path / "run"
    shutil.copytree(trained_run(cfg_for(tmp_path)), run)
    elsewhere = tmp_path / "hydra_made"
    res = train.run(cfg_for(tmp_path, "train.steps=3", f"resume={run}"), elsewhere)
    assert not elsewhere.exists()
    assert (run / "checkpoints" / "latest").read_text() == "step_000003"
    ev = json.loads((run / "eval.json").read_text())
    assert ev == json.loads(json.dumps(res)) and "warm_start" in ev
    best = torch.load(run / "checkpoints" / "best" / "state.pt", weights_only=False)
    assert (ev["final"]["selected_step"], ev["final"]["selected_val_success"]) == (best["step"], best["best"]["score"])


@pytest.mark.e2e
def test_the_command_line_writes_hydras_record_itself_and_resumes_in_the_runs_own_directory(
        tmp_path, monkeypatch, trained_run):
    """`python -m marl.train` (Hydra's entry point, in this process): a fresh start writes
    .hydra/ once accepted and no job log; `resume=<run>` without hydra.run.dir continues in the
    run and leaves no runs/<date>/<time> behind."""
    trained_run(cfg_for(tmp_path))  # the small tiny model, built in the shared cache
    cache, run = f"cache_dir={tmp_path.parent / 'cache'}", tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    for args in ([f"hydra.run.dir={run}"], [f"resume={run}", "train.steps=3"]):
        monkeypatch.setattr(sys, "argv", ["marl.train", f"--config-path={CONF}", "+exp=planning", *SMALL, cache, *args])
        train.main()
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    overrides = (run / ".hydra" / "overrides.yaml").read_text()
    assert f"- {cache}" in overrides and "resume=" not in overrides  # the starting command's
    assert not list(run.glob("*.log")) and not (tmp_path / "runs").exists()
    assert (run / "checkpoints" / "latest").read_text() == "step_000003"
