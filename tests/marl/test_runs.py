"""marl.runs, the run directory's contract, on run directories made by hand (a config.yaml and a
checkpoint of a stand-in engine): which starts are refused, that a refused start changes no file
(through `python -m marl.train` too: Hydra writes nothing there itself), what a resume may change,
and the diff helper the mismatch experiment shares."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from marl import checkpoint, runs, train
from marl.config import save_run_settings
from test_checkpoint import FileEngine
from test_train_smoke import CONF, SMALL, cfg_for


def made_run(tmp_path, *overrides, step=0) -> Path:
    """A run directory as marl.train leaves it after `step` steps, the engine a stand-in."""
    run = tmp_path / "run"
    run.mkdir()
    save_run_settings(cfg_for(tmp_path, *overrides), run)
    for best in (False, True):
        checkpoint.save(run / "checkpoints", step, FileEngine(step), {"best": {"score": 0.5, "step": 0}}, best=best)
    (run / "metrics.jsonl").write_text('{"step": 0}\n')
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):  # what Hydra wrote at the start
        (run / ".hydra").mkdir(exist_ok=True)
        (run / ".hydra" / name).write_text(f"# {name} of the command that started the run\n")
    return run


def snapshot(d: Path) -> dict:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.rglob("*")) if p.is_file()}


def test_the_diff_helper_compares_what_marl_train_reads():
    saved = {"algo": {"k": 4, "alpha": 1.0}, "threads": 0, "resume": None, "logger": {"name": "wandb"},
             "per_model": {"tiny": {"lr": 1}}, "mismatch": {"out": "a"}, "train": {"steps": 2}}
    new = {"algo": {"k": 8, "alpha": 1.0}, "threads": 1, "resume": "/r", "logger": {"name": "none"},
           "per_model": {"tiny": {"lr": 2}}, "mismatch": {"out": "b"}, "train": {"steps": 3}, "eval": {"n_val": 4}}
    assert runs.differing_keys(saved, new)[:2] == ["algo.k", "eval"]
    assert runs.changed_keys(saved, new) == ["algo.k", "eval", "train.steps"]


@pytest.mark.parametrize("override, key", [("harness=single", "harness.name"), ("algo.k=3", "algo.k"),
                                           ("train.lr=1e-3", "train.lr"), ("policy=per_role", "policy.name"),
                                           ("train.steps=1", "train.steps")])
def test_a_resume_that_changes_the_run_is_refused_before_anything_is_written(tmp_path, override, key):
    run = made_run(tmp_path)
    before = snapshot(run)
    with pytest.raises(ValueError, match=rf"resume=.*differs from the run's .*config.yaml\) in: {key}\. "
                                         r"A resume continues the same run: it may change only resume, threads, "
                                         r"cache_dir, logger, and train.steps upwards \(the run had 2\)\. Nothing in"):
        train.run(cfg_for(tmp_path, override, f"resume={run}"), run)
    assert snapshot(run) == before


def test_what_a_resume_may_change(tmp_path):
    run = made_run(tmp_path)
    start = runs.check_start(cfg_for(tmp_path, f"resume={run}", "threads=2", "logger=wandb",
                                     f"cache_dir={tmp_path}", "train.steps=5"), run)
    assert start == runs.Start(run, run / "checkpoints" / "step_000000", start.notes)
    assert len(start.notes) == 1 and "train.steps extended from 2 to 5: the cosine learning-rate schedule" in start.notes[0]
    assert "equals no uninterrupted run" in start.notes[0]


@pytest.mark.parametrize("resume", ["run", "run/checkpoints", "run/checkpoints/step_000000"])
def test_a_resume_continues_in_the_runs_own_directory(tmp_path, resume):
    run = made_run(tmp_path)
    start = runs.check_start(cfg_for(tmp_path, f"resume={tmp_path / resume}"), tmp_path / "hydra_made")
    assert start.run_dir == run and start.checkpoint == run / "checkpoints" / "step_000000"
    assert f"continuing in the run's own directory {run}, not in {tmp_path / 'hydra_made'}" in start.notes[0]


def test_a_run_saved_with_only_best_resumes_from_it(tmp_path):
    """Runs killed before their first periodic checkpoint under the code before the warm start
    was also `latest` hold only `best` (the warm start): resumed from it."""
    run = made_run(tmp_path)
    (run / "checkpoints" / "latest").unlink()
    assert runs.check_start(cfg_for(tmp_path, f"resume={run}"), run).checkpoint == run / "checkpoints" / "step_000000"
    for f in (run / "checkpoints" / "step_000000").iterdir():
        f.unlink()
    (run / "checkpoints" / "step_000000").rmdir()
    assert runs.check_start(cfg_for(tmp_path, f"resume={run}"), run).checkpoint == run / "checkpoints" / "best"
    with pytest.raises(ValueError, match="already holds a run; continue it with resume="):
        runs.check_start(cfg_for(tmp_path), run)


def test_a_fresh_start_may_reuse_a_directory_without_a_checkpoint(tmp_path):
    """A run killed before its first checkpoint (during the warm start's evaluation) left nothing
    to continue: a fresh start may use its directory."""
    run = made_run(tmp_path)
    for d in ("best", "step_000000"):
        for f in (run / "checkpoints" / d).iterdir():
            f.unlink()
        (run / "checkpoints" / d).rmdir()
    (run / "checkpoints" / "latest").unlink()
    assert runs.check_start(cfg_for(tmp_path), run) == runs.Start(run)


@pytest.mark.parametrize("remove, msg", [("state.pt", r"incomplete: no state.pt \(it holds \['policy_a.pt', 'policy_b.pt'\]\)"),
                                         ("policy_b.pt", r"incomplete: policy_b.pt missing \(its state.pt lists")])
def test_a_resume_from_an_incomplete_checkpoint_is_refused_naming_the_file(tmp_path, remove, msg):
    run = made_run(tmp_path)
    (run / "checkpoints" / "step_000000" / remove).unlink()
    before = snapshot(run)
    with pytest.raises(ValueError, match=rf"checkpoint {run / 'checkpoints' / 'step_000000'} is {msg}"):
        train.run(cfg_for(tmp_path, f"resume={run}"), run)  # before the model loads
    assert snapshot(run) == before


def marl_train(monkeypatch, cwd: Path, *args: str) -> None:
    """`python -m marl.train +exp=planning <SMALL> <args>` in this process, through Hydra's own
    entry point (a refused start exits with status 1)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["marl.train", f"--config-path={CONF}", "+exp=planning", *SMALL, *args])
    with pytest.raises(SystemExit) as e:
        train.main()
    assert e.value.code == 1


def test_a_refused_start_from_the_command_line_changes_no_file(tmp_path, monkeypatch, capsys):
    """Hydra itself wrote .hydra/ (and a train.log) into the run directory before marl.train's
    checks refused the start; now it writes nothing there."""
    run = made_run(tmp_path)
    before = snapshot(run)
    marl_train(monkeypatch, tmp_path, f"hydra.run.dir={run}")
    assert "already holds a run; continue it with resume=" in capsys.readouterr().err
    marl_train(monkeypatch, tmp_path, f"resume={run}", "algo.k=3")  # hydra.run.dir: Hydra's default runs/<date>/<time>
    err = capsys.readouterr().err
    assert "differs from the run's" in err and "in: algo.k." in err
    assert snapshot(run) == before
    assert not (tmp_path / "runs").exists(), "nothing left in the directory Hydra made"


def test_a_named_checkpoint_that_does_not_exist_is_refused(tmp_path):
    run = made_run(tmp_path)
    with pytest.raises(ValueError, match=r"resume=.*step_000007: no checkpoint found there"):
        runs.check_start(cfg_for(tmp_path, f"resume={run / 'checkpoints' / 'step_000007'}"), run)


def test_a_resume_from_an_earlier_checkpoint_than_the_runs_latest_is_refused(tmp_path):
    """`resume=<run>/checkpoints/best` (step 0) in a run that went on to step 2: training on from
    it would replace the later checkpoints; and with `latest` lost, the newest step is found."""
    run = made_run(tmp_path, "train.steps=4")
    checkpoint.save(run / "checkpoints", 2, FileEngine(2), {"best": {"score": 0.5, "step": 0}}, keep=2)
    before = snapshot(run)
    with pytest.raises(ValueError, match=r"best holds step 0, but the run has a later checkpoint, .*step_000002; a "
                                         r"resume continues from the run's latest"):
        runs.check_start(cfg_for(tmp_path, "train.steps=4", f"resume={run / 'checkpoints' / 'best'}"), run)
    (run / "checkpoints" / "latest").unlink()
    assert runs.check_start(cfg_for(tmp_path, "train.steps=4", f"resume={run}"), run).checkpoint == \
        run / "checkpoints" / "step_000002"
    del before[run / "checkpoints" / "latest"]
    assert snapshot(run) == before


def test_a_finished_run_is_not_resumed(tmp_path):
    """Resuming a finished run would test it again and log its final test twice."""
    run = made_run(tmp_path, step=2)
    (run / "eval.json").write_text('{"final": {}}')
    with pytest.raises(ValueError, match=r"the run finished its 2 steps .*: nothing to continue. To train on, pass a "
                                         r"larger train.steps"):
        runs.check_start(cfg_for(tmp_path, f"resume={run}"), run)
    assert runs.check_start(cfg_for(tmp_path, f"resume={run}", "train.steps=3"), run).checkpoint is not None


def test_the_summary_marks_a_warm_start_that_was_not_evaluated(tmp_path, capsys):
    s = cfg_for(tmp_path, "eval.warm_start=false", "eval.harnesses=[mas]")
    res = {"mas": {"val": {"success": 0.5}, "test": {"success": 0.25}}, "final": {"selected_step": 2}}
    train.print_summary(res, s, tmp_path)
    rows = capsys.readouterr().out.splitlines()
    assert "nan" not in "\n".join(rows)
    assert any(r.split() == ["mas", "test", "-", "25.0%"] for r in rows)
    res["warm_start"] = {"test": {"mas": {"success": 0.125}}}
    train.print_summary(res, s, tmp_path)
    assert any(r.split() == ["mas", "test", "12.5%", "25.0%"] for r in capsys.readouterr().out.splitlines())
