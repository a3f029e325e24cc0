"""Session fixtures shared by the end-to-end tests (each is built once per test run)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A minute-sized tiny model and run: enough for every output to exist, far too small to learn.
SMALL = ["logger=none", "model.sft.steps=30", "model.sft.instances=300", "train.steps=2",
         "train.problems_per_step=3", "train.eval_every=2", "eval.n_val=4", "eval.n_test=4", "algo.k=2",
         "threads=1"]


def run_mismatch(out: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.mismatch", f"mismatch.out={out}",
                           f"cache_dir={cache}", *SMALL, "seed=0", *extra], cwd=ROOT, capture_output=True, text=True)


@pytest.fixture(scope="session")
def mismatch_cmd():
    """run_mismatch(out, cache, *overrides): the experiment's command on the small settings."""
    return run_mismatch


@pytest.fixture(scope="session")
def mismatch_experiment(tmp_path_factory):
    """(out dir, cache dir, process) of `python -m experiments.mismatch` over 3 archs x 1 seed."""
    out, cache = tmp_path_factory.mktemp("mismatch") / "out", tmp_path_factory.getbasetemp() / "cache"
    proc = run_mismatch(out, cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, cache, proc


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """trained_run(cfg) -> the directory of `marl.train` run on `cfg`, trained once per test session
    for each distinct config and shared by every test that asks for that config (the output,
    evaluate, resume and analysis tests on the small planning run). Read it; copy it before
    writing to it (`shutil.copytree`), so tests run in any order."""
    from marl import train
    runs: dict[str, Path] = {}

    def get(cfg) -> Path:
        key = repr(cfg)  # RunSettings: frozen dataclasses, so equal settings give equal reprs
        if key not in runs:
            run_dir = tmp_path_factory.mktemp("trained") / "run"
            train.run(cfg, run_dir)
            runs[key] = run_dir
        return runs[key]
    return get
