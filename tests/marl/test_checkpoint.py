"""marl.checkpoint on a stand-in engine: layout, atomic replacement, `latest`, pruning, RNG
restore, path resolution, and a save killed half-way leaving the previous checkpoint whole."""
from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from marl import checkpoint


class FileEngine:
    """Saves one file per policy holding a number; `fail` makes save die half-way."""

    def __init__(self, value=0, fail=False):
        self.value, self.fail, self.loaded = value, fail, None

    def save(self, directory: Path) -> None:
        (Path(directory) / "policy_a.pt").write_text(str(self.value))
        if self.fail:
            raise KeyboardInterrupt("killed while saving")
        (Path(directory) / "policy_b.pt").write_text(str(self.value))

    def load(self, directory: Path, weights_only: bool = False) -> None:
        self.loaded = (int((Path(directory) / "policy_b.pt").read_text()), weights_only)


def test_layout_latest_and_pruning(tmp_path):
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, step, FileEngine(step), {"best": {"step": step}}, keep=2)
    checkpoint.save(tmp_path, 2, FileEngine(20), {"best": {"step": 2}}, best=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "latest", "step_000002", "step_000003"]
    assert (tmp_path / "latest").read_text() == "step_000003"
    assert checkpoint.latest(tmp_path) == tmp_path / "step_000003" == checkpoint.latest(tmp_path.parent / tmp_path.name)
    e = FileEngine()
    state = checkpoint.load(tmp_path / "best", e)
    assert e.loaded == (20, False) and state["step"] == 2 and state["best"] == {"step": 2}


def test_a_save_killed_half_way_leaves_the_previous_checkpoint(tmp_path):
    checkpoint.save(tmp_path, 1, FileEngine(1), {})
    checkpoint.save(tmp_path, 1, FileEngine(1), {}, best=True)
    for best in (False, True):
        with pytest.raises(KeyboardInterrupt):
            checkpoint.save(tmp_path, 1 if best else 2, FileEngine(2, fail=True), {}, best=best)
    assert (tmp_path / "latest").read_text() == "step_000001"
    assert not (tmp_path / "step_000002").exists()
    assert (tmp_path / "best" / "policy_b.pt").read_text() == "1"  # the old best, whole
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary left behind"


def test_load_restores_the_rng_states_unless_weights_only(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    checkpoint.save(tmp_path, 1, FileEngine(), {})
    want = (random.random(), np.random.rand(), torch.rand(1).item())
    checkpoint.load(tmp_path / "step_000001", FileEngine(), weights_only=True)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) != want  # left alone
    checkpoint.load(tmp_path / "step_000001", FileEngine())
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == want


def test_resolve_names_best_latest_or_a_directory(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="checkpoint=best: no checkpoint at .*allowed: best, latest"):
        checkpoint.resolve(run, "best")
    with pytest.raises(ValueError, match="checkpoint=latest: no checkpoint"):
        checkpoint.resolve(run, "latest")
    checkpoint.save(run / "checkpoints", 4, FileEngine(), {})
    checkpoint.save(run / "checkpoints", 3, FileEngine(), {}, best=True)
    assert checkpoint.resolve(run, "latest") == run / "checkpoints" / "step_000004"
    assert checkpoint.resolve(run, "best") == run / "checkpoints" / "best"
    assert checkpoint.resolve(run, str(run / "checkpoints" / "best")) == run / "checkpoints" / "best"
    with pytest.raises(ValueError, match="no checkpoint at"):
        checkpoint.resolve(run, str(tmp_path / "elsewhere"))


def test_the_warm_start_is_the_first_latest_and_best_one_copy_on_disk(tmp_path):
    checkpoint.save(tmp_path, 0, FileEngine(7), {"best": {"step": 0}}, best=True, latest=True)
    assert (tmp_path / "latest").read_text() == "step_000000"
    for name in ("policy_a.pt", "policy_b.pt", "state.pt"):  # the second name a hard link
        assert (tmp_path / "best" / name).stat().st_ino == (tmp_path / "step_000000" / name).stat().st_ino
    checkpoint.save(tmp_path, 1, FileEngine(8), {}, best=True)  # a new best replaces the link, not the file
    assert (tmp_path / "step_000000" / "policy_b.pt").read_text() == "7"
    e = FileEngine()
    assert checkpoint.load(checkpoint.latest(tmp_path), e)["step"] == 0 and e.loaded == (7, False)


class FullDisk(FileEngine):
    def save(self, directory: Path) -> None:
        (Path(directory) / "policy_a.pt").write_text(str(self.value))
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_during_a_save_leaves_the_previous_checkpoint_usable(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, 0, FileEngine(1), {})
    said = r"step 20 .* failed \(.*No space left.*\); it is not used, and the previous checkpoint, .*step_000000, is complete"
    with pytest.raises(RuntimeError, match=said):
        checkpoint.save(tmp_path, 20, FullDisk(2), {})
    real = os.replace

    def full_at_latest(src, dst):  # the step directory fits, the file naming it does not
        if Path(dst).name == "latest":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(os, "replace", full_at_latest)
    with pytest.raises(RuntimeError, match=said):
        checkpoint.save(tmp_path, 20, FileEngine(2), {})
    monkeypatch.setattr(os, "replace", real)
    assert (tmp_path / "latest").read_text() == "step_000000"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary left behind"
    e = FileEngine()
    assert checkpoint.load(checkpoint.latest(tmp_path), e)["step"] == 0 and e.loaded == (1, False)


@pytest.mark.parametrize("remove, msg", [("state.pt", r"no state.pt \(it holds \['policy_a.pt', 'policy_b.pt'\]\)"),
                                         ("policy_b.pt", r"policy_b.pt missing \(its state.pt lists policy_a.pt, policy_b.pt\)")])
def test_an_incomplete_checkpoint_is_refused_naming_the_file_before_anything_loads(tmp_path, remove, msg):
    checkpoint.save(tmp_path, 1, FileEngine(1), {})
    (tmp_path / "step_000001" / remove).unlink()
    e = FileEngine()
    with pytest.raises(ValueError, match=rf"checkpoint {tmp_path / 'step_000001'} is incomplete: {msg}"):
        checkpoint.load(tmp_path / "step_000001", e)
    assert e.loaded is None


class TorchEngine(FileEngine):
    """Saves its policy with torch.save, as the engines do, so a truncated file fails to load."""

    def save(self, directory: Path) -> None:
        torch.save({"w": torch.arange(1000.0)}, Path(directory) / "policy_a.pt")

    def load(self, directory: Path, weights_only: bool = False) -> None:
        self.loaded = torch.load(Path(directory) / "policy_a.pt")


@pytest.mark.parametrize("damaged, what", [("state.pt", "state.pt"), ("policy_a.pt", "the policy files")])
def test_a_damaged_checkpoint_file_is_named_as_such(tmp_path, damaged, what):
    checkpoint.save(tmp_path, 1, TorchEngine(), {})
    path = tmp_path / "step_000001"
    os.truncate(path / damaged, 100)  # a copy or a write cut short
    with pytest.raises(ValueError, match=rf"checkpoint {path}: {what} cannot be loaded \(.*\): a damaged file"):
        checkpoint.load(path, TorchEngine())


def test_resolve_names_a_step_under_the_run_and_an_incomplete_one_as_such(tmp_path):
    ckpts = tmp_path / "checkpoints"
    for step in (1, 2):
        checkpoint.save(ckpts, step, FileEngine(step), {}, keep=2)
    assert checkpoint.resolve(tmp_path, "step_000001") == ckpts / "step_000001"  # a name under checkpoints/
    assert checkpoint.resolve(tmp_path, str(ckpts / "step_000002")) == ckpts / "step_000002"
    with pytest.raises(ValueError, match=r"checkpoint=step_9: no checkpoint at .*: \['step_000001', 'step_000002'\]"):
        checkpoint.resolve(tmp_path, "step_9")
    (ckpts / "step_000002" / "state.pt").unlink()
    with pytest.raises(ValueError, match=r"step_000002 is incomplete: no state.pt"):  # not "no checkpoint at"
        checkpoint.resolve(tmp_path, "latest")
