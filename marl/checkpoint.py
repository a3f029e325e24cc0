"""Checkpoints: the engine's policies (weights, optimizers, schedules), the RNG states, the step
and the trainer's own state, written atomically.

Layout: `checkpoints/step_NNNNNN/` and `checkpoints/best/` (selected on validation), each holding
`state.pt` and what the engine's `save` writes (the local engine: one `policy_<id>.pt` per
policy); `checkpoints/latest` names the newest step directory. A directory is written under a
temporary name and renamed into place, and `latest` is replaced atomically after it, so a run
killed at any moment (or a save failing on a full disk) resumes from a complete checkpoint. The
warm start is the first: `step_000000`, and `best` too when it was evaluated (one copy on disk:
the second name is a hard link). `state.pt`, written last, lists the files the engine wrote, so
a checkpoint missing one is refused before anything loads (`check`).
"""
from __future__ import annotations

import os
import pickle
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


def save(ckpt_dir: Path, step: int, engine, state: dict, best: bool = False, latest: bool | None = None,
         keep: int = 1) -> Path:
    """Save the run after `step` completed steps; `state`: the trainer's extras (best score,
    its RNG). As `best` and/or as the newest step directory named by `latest` (by default: when
    not `best`); saved as both, it is written once. Keeps the newest `keep` step directories."""
    ckpt_dir = Path(ckpt_dir)
    latest = not best if latest is None else latest
    targets = ([ckpt_dir / f"step_{step:06d}"] if latest else []) + ([ckpt_dir / "best"] if best else [])
    try:
        with atomic_dir(targets[0]) as tmp:
            engine.save(tmp)
            files = sorted(p.name for p in tmp.iterdir())
            torch.save({"step": step, "rng": _rng_state(), "files": files, **state}, tmp / "state.pt")
        for target in targets[1:]:
            with atomic_dir(target) as tmp:
                shutil.copytree(targets[0], tmp, dirs_exist_ok=True, copy_function=_link)
        if latest:
            atomic_write_text(ckpt_dir / "latest", targets[0].name)
    except (OSError, RuntimeError) as err:  # a full disk: torch.save raises RuntimeError, file writes OSError
        before = (ckpt_dir / "latest").read_text().strip() if (ckpt_dir / "latest").exists() else None
        kept = (f"the previous checkpoint, {ckpt_dir / before}, is complete: continue with resume={ckpt_dir.parent}"
                if before else "no earlier checkpoint was saved")
        raise RuntimeError(f"saving the checkpoint of step {step} into {ckpt_dir} failed ({err}); it is not used, "
                           f"and {kept} once the cause (a full disk?) is fixed") from err
    if latest:
        steps = sorted(d for d in ckpt_dir.glob("step_*") if d.is_dir())
        for d in steps[:-keep]:
            shutil.rmtree(d, ignore_errors=True)
    return targets[0]


def _link(src: str, dst: str) -> None:
    """A hard link (checkpoint files are never written in place, only replaced), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


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
    checkpoint directory (a path, or a name under the run's checkpoints/, e.g. step_000020).
    Raises if there is none or it is incomplete."""
    run_dir = Path(run_dir)
    path = {"best": run_dir / "checkpoints" / "best", "latest": latest(run_dir)}.get(which, Path(which))
    if path is not None and which not in ("best", "latest") and not path.exists():
        path = run_dir / "checkpoints" / which
    if path is None or not path.is_dir():
        steps = sorted(d.name for d in (run_dir / "checkpoints").glob("step_*"))
        raise ValueError(f"checkpoint={which}: no checkpoint at {path if path else run_dir} (allowed: best, latest, "
                         f"a checkpoint directory or a name under {run_dir / 'checkpoints'}: {steps or 'none saved'})")
    check(path)
    return path


def check(path: Path) -> dict:
    """Refuse an incomplete checkpoint, naming what is missing; returns its state (state.pt)."""
    path = Path(path)
    if not (path / "state.pt").exists():
        have = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
        raise ValueError(f"checkpoint {path} is incomplete: no state.pt (it holds {have or 'nothing'}); "
                         "resume from another checkpoint, e.g. checkpoints/best or a step_* directory")
    state = _read(path, "state.pt", lambda f: torch.load(f, map_location="cpu", weights_only=False))
    missing = [f for f in state.get("files", []) if not (path / f).exists()]  # checkpoints before the list: none
    if missing:
        raise ValueError(f"checkpoint {path} is incomplete: {', '.join(missing)} missing (its state.pt lists "
                         f"{', '.join(state['files'])})")
    return state


def _read(path: Path, what: str, read):
    """read(path / what), a damaged file (a write cut short, a copy truncated) named as such."""
    try:
        return read(path / what)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"checkpoint {path}: {what} cannot be loaded ({type(err).__name__}: {str(err)[:200]}): a "
                         "damaged file (a write cut short, a truncated copy) or a checkpoint of another model; use "
                         "another checkpoint (checkpoints/best or a step_* directory)") from err


def load(path: Path, engine, weights_only: bool = False) -> dict:
    """Load the engine's policies from `path` (and, unless weights_only, their optimizers and
    schedules and the RNG states); returns the trainer state. An incomplete checkpoint is
    refused before anything loads."""
    path = Path(path)
    state = check(path)
    _read(path, "the policy files", lambda _: engine.load(path, weights_only=weights_only))
    if not weights_only:
        _set_rng_state(state["rng"])
    return state
