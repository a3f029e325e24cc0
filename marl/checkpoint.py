"""Checkpoints: policies, optimizers, schedules, RNG states and the step, written atomically.

Layout: `checkpoints/step_NNNNNN/` and `checkpoints/best/` (selected on validation), each holding
`state.pt` (+ one `policy_<name>.pt` per policy); `checkpoints/latest` names the newest step
directory. A directory is written under a temporary name and renamed into place, and `latest`
is replaced atomically after it, so a run killed at any moment resumes from a complete
checkpoint.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _write_dir(target: Path, files: dict[str, object]) -> None:
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, obj in files.items():
        torch.save(obj, tmp / name)
    old = target.with_name(f".{target.name}.old{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save(ckpt_dir: Path, step: int, policies, state: dict, best: bool = False, keep: int = 1) -> Path:
    """Save the trainer after `step` completed steps. `state`: trainer extras (best score...)."""
    ckpt_dir = Path(ckpt_dir)
    files = {f"policy_{n}.pt": {"model": p.model.state_dict(), "optimizer": p.optimizer.state_dict(),
                                "scheduler": p.scheduler.state_dict()} for n, p in policies.items()}
    files["state.pt"] = {"step": step, "rng": _rng_state(), **state}
    target = ckpt_dir / ("best" if best else f"step_{step:06d}")
    _write_dir(target, files)
    if not best:
        _atomic_text(ckpt_dir / "latest", target.name)
        steps = sorted(d for d in ckpt_dir.glob("step_*") if d.is_dir())
        for d in steps[:-keep]:
            shutil.rmtree(d, ignore_errors=True)
    return target


def latest(run_or_ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint under a run directory or its checkpoints/ directory."""
    d = Path(run_or_ckpt_dir)
    for base in (d / "checkpoints", d):
        if (base / "latest").exists():
            return base / (base / "latest").read_text().strip()
    if (d / "state.pt").exists():
        return d
    return None


def load(path: Path, policies, restore_rng: bool = True, weights_only_models: bool = False) -> dict:
    """Load policies (and optimizers, schedules, RNG unless weights_only_models) from `path`;
    returns the trainer state."""
    path = Path(path)
    for n, p in policies.items():
        f = path / f"policy_{n}.pt"
        if not f.exists():
            have = sorted(x.name for x in path.glob("policy_*.pt"))
            raise ValueError(f"checkpoint {path} has no policy {n!r} (has {have})")
        blob = torch.load(f, map_location="cpu", weights_only=False)
        p.model.load_state_dict(blob["model"])
        if not weights_only_models:
            p.optimizer.load_state_dict(blob["optimizer"])
            p.scheduler.load_state_dict(blob["scheduler"])
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    if restore_rng and not weights_only_models:
        _set_rng_state(state["rng"])
    return state
