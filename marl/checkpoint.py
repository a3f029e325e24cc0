"""Checkpoints: the engine's policies (weights, optimizers, schedules), the RNG states, the step
and the trainer's own state, written atomically.

Layout: `checkpoints/step_NNNNNN/` and `checkpoints/best/` (selected on validation), each holding
`state.pt` and what the engine's `save` writes (the local engine: one `policy_<id>.pt` per
policy); `checkpoints/latest` names the newest step directory. A directory is written under a
temporary name and renamed into place, and `latest` is replaced atomically after it, so a run
killed at any moment resumes from a complete checkpoint.
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch

from marl.io import atomic_dir, atomic_write_text


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save(ckpt_dir: Path, step: int, engine, state: dict, best: bool = False, keep: int = 1) -> Path:
    """Save the run after `step` completed steps; `state`: the trainer's extras (best score,
    its RNG). Keeps the newest `keep` step directories (and `best`)."""
    ckpt_dir = Path(ckpt_dir)
    target = ckpt_dir / ("best" if best else f"step_{step:06d}")
    with atomic_dir(target) as tmp:
        engine.save(tmp)
        torch.save({"step": step, "rng": _rng_state(), **state}, tmp / "state.pt")
    if not best:
        atomic_write_text(ckpt_dir / "latest", target.name)
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


def resolve(run_dir: Path, which: str) -> Path:
    """The checkpoint `which` names in a run: best (selected on validation), latest, or a
    checkpoint directory. Raises if there is none."""
    run_dir = Path(run_dir)
    path = {"best": run_dir / "checkpoints" / "best", "latest": latest(run_dir)}.get(which, Path(which))
    if path is None or not (path / "state.pt").exists():
        raise ValueError(f"checkpoint={which}: no checkpoint at {path if path else run_dir} "
                         "(allowed: best, latest or a checkpoint directory)")
    return path


def load(path: Path, engine, weights_only: bool = False) -> dict:
    """Load the engine's policies from `path` (and, unless weights_only, their optimizers and
    schedules and the RNG states); returns the trainer state."""
    path = Path(path)
    engine.load(path, weights_only=weights_only)
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    if not weights_only:
        _set_rng_state(state["rng"])
    return state
