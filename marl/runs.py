"""The run directory's contract: which directory a run writes, when a start may use it, and what
a resume may change.

- A fresh start may use a directory that holds no checkpoint (a run killed before its first one
  left nothing to continue); a directory holding a checkpoint is continued with `resume=`.
- `resume=<run dir>` (or its `checkpoints/`, or one checkpoint directory) continues in the run's
  own directory, whatever `hydra.run.dir` says, from its latest checkpoint (the warm start is
  the first: `checkpoints/step_000000`).
- A resume runs the same run: its config may differ from the run's config.yaml only in
  `MAY_DIFFER` (where the run's files go and how fast it runs, never what it trains) and in a
  larger `train.steps` (see `check_start`).

Every check here runs before anything is built or written, so a refused start leaves the
directory as it was, Hydra's files included: conf/config.yaml turns off Hydra's own `.hydra/`
output and log file, and `HydraFiles` writes `.hydra/` once a fresh start is accepted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from marl import checkpoint
from marl.config import RunSettings, saved_config

# The top-level sections marl.train reads (marl.config); others (an experiment's own `mismatch`,
# `per_model`, ...) reach a run only through these, so only these are compared.
RUN_KEYS = ("seed", "device", "threads", "resume", "cache_dir", "env", "harness", "model", "policy",
            "engine", "algo", "train", "eval", "logger")
# What a resume may change: the run's own location, torch's thread count, where the built tiny
# model is cached (the same model, keyed by its config) and the loggers (metrics.jsonl is always
# written). Everything else changes what is trained or how it is evaluated and selected.
MAY_DIFFER = ("resume", "threads", "cache_dir", "logger")


def differing_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two nested dicts (a key missing in one differs)."""
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += differing_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def changed_keys(saved: dict, new: dict, may_differ=MAY_DIFFER) -> list[str]:
    """The keys marl.train reads whose values differ between two resolved configs, less those
    under `may_differ`."""
    def runs(c):
        return {k: v for k, v in c.items() if k in RUN_KEYS}
    return [k for k in differing_keys(runs(saved), runs(new))
            if not any(k == m or k.startswith(m + ".") for m in may_differ)]


def refuse_other_config(directory: Path, s: RunSettings, remedy: str) -> None:
    """Refuse a directory holding a run (config.yaml) of another config than `s` (changed_keys),
    naming the keys that differ: an experiment's cell is never overwritten or mixed."""
    if not (Path(directory) / "config.yaml").exists():
        return
    diff = changed_keys(saved_config(directory), s.config)
    if diff:
        raise ValueError(f"{directory} holds a cell trained with another config (differs in: {', '.join(diff)}); "
                         f"{remedy}")


def run_dir_of(resume: str | Path) -> Path:
    """The run directory `resume=` names: itself, or the run above its checkpoints/ or above
    one checkpoint directory."""
    p = Path(resume).expanduser()
    if p.name == "checkpoints":
        return p.parent
    if p.parent.name == "checkpoints":
        return p.parent.parent
    return p


def resume_point(path: str | Path) -> Path | None:
    """The checkpoint a resume from `path` starts at: the one named, else the run's latest; where
    `latest` is lost, its newest step directory, else `best` (runs saved before the warm start was
    also the first `latest` hold only `best` until their first periodic checkpoint; `best` holds
    the whole state of its step, as a step directory does)."""
    p = Path(path).expanduser()
    found = checkpoint.latest(p)
    if found is not None or p.parent.name == "checkpoints":  # found, or one checkpoint was named
        return found
    ckpts = run_dir_of(p) / "checkpoints"
    steps = sorted(d for d in ckpts.glob("step_*") if (d / "state.pt").exists())
    if steps:
        return steps[-1]
    return ckpts / "best" if (ckpts / "best" / "state.pt").exists() else None


def holds_a_run(run_dir: Path) -> bool:
    """Whether a fresh start would write over a run that can be continued (one with a checkpoint)."""
    return resume_point(run_dir) is not None


@dataclass(frozen=True)
class Start:
    """An accepted start: the directory it writes, the checkpoint it resumes (None: a fresh
    start) and what the user should know about it."""

    run_dir: Path
    checkpoint: Path | None = None
    notes: tuple[str, ...] = ()


def check_start(s: RunSettings, run_dir: Path) -> Start:
    """Refuse a start that would lose or mix up work, before anything is built or written.
    `run_dir`: the directory Hydra (or the caller) chose; a resume writes the run's own."""
    from marl.engine import engine_class, training_engines

    if not engine_class(s.engine.name).trains:
        raise ValueError(f"engine={s.engine.name} generates only (an endpoint's model is not trained here); "
                         f"the engines that train: {', '.join(training_engines())}. To evaluate a served model: "
                         f"python -m marl.evaluate +exp=<task> engine={s.engine.name} ...")
    run_dir = Path(run_dir)
    if not s.resume:
        if holds_a_run(run_dir):
            raise ValueError(f"{run_dir} already holds a run; continue it with resume={run_dir} or choose "
                             "another hydra.run.dir (nothing there was changed)")
        return Start(run_dir)
    own = run_dir_of(s.resume)
    path = resume_point(s.resume)
    if path is None:
        raise ValueError(f"resume={s.resume}: no checkpoint found there (a run directory of marl.train, its "
                         "checkpoints/ or a checkpoint directory)")
    if not (own / "config.yaml").exists():
        raise ValueError(f"resume={s.resume}: {own} is not a run directory of marl.train (no config.yaml)")
    step = checkpoint.check(path)["step"]
    newest = resume_point(own)
    if path != newest and checkpoint.check(newest)["step"] > step:
        raise ValueError(f"resume={s.resume}: {path} holds step {step}, but the run has a later checkpoint, {newest}; a "
                         f"resume continues from the run's latest (resume={own}), since training on from an earlier "
                         "one would replace the later checkpoints and selection. To branch from it, copy the run to "
                         "another directory first (nothing was changed)")
    results = own / "eval.json"
    if step >= s.train.steps and results.exists() and "final" in json.loads(results.read_text()):
        raise ValueError(f"resume={s.resume}: the run finished its {step} steps and tested the selected checkpoint "
                         f"({results}): nothing to continue. To train on, pass a larger train.steps (nothing was changed)")
    saved = saved_config(own)
    diff = changed_keys(saved, s.config)
    notes = []
    if own.resolve() != run_dir.resolve():
        notes.append(f"resume={s.resume}: continuing in the run's own directory {own}, not in {run_dir}")
    old, new = saved["train"]["steps"], s.train.steps
    if "train.steps" in diff and new > old:
        diff.remove("train.steps")
        jump = "a jump in the rate: " if s.train.schedule == "cosine" else ""
        notes.append(f"train.steps extended from {old} to {new}: the {s.train.schedule} learning-rate schedule "
                     f"follows the new length from this checkpoint on ({jump}the run equals no uninterrupted run "
                     f"of either length); its validation at step {old} stays a candidate for selection")
    if diff:
        raise ValueError(
            f"resume={s.resume}: the config differs from the run's ({own / 'config.yaml'}) in: {', '.join(diff)}. "
            f"A resume continues the same run: it may change only {', '.join(MAY_DIFFER)}, and train.steps upwards "
            f"(the run had {old}). Nothing in {own} was changed; to train with other settings start a new run "
            "(another hydra.run.dir)")
    return Start(own, path, tuple(notes))


def leave_no_trace(made: Path) -> None:
    """Remove the directory Hydra made if nothing was written into it (a refused start, or a
    resume that continued in the run's own directory), and its parents below the working
    directory that are left empty (Hydra's default runs/<date>/<time>)."""
    made, cwd = Path(made).absolute(), Path.cwd().absolute()
    while made.is_dir() and not any(made.iterdir()):
        made.rmdir()
        if cwd not in made.parent.parents:
            return
        made = made.parent


@dataclass(frozen=True)
class HydraFiles:
    """The `.hydra/` record Hydra writes into a run directory (the composed config, Hydra's own
    config, the command's overrides), captured at start and written only once the start is
    accepted (conf/config.yaml sets hydra.output_subdir: null so that Hydra writes none itself)."""

    texts: dict  # file name -> YAML text

    @classmethod
    def current(cls, cfg) -> "HydraFiles":
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        hc = HydraConfig.instance().cfg  # {hydra: ...}, as Hydra saves it
        return cls({"config.yaml": OmegaConf.to_yaml(cfg), "hydra.yaml": OmegaConf.to_yaml(hc),
                    "overrides.yaml": OmegaConf.to_yaml(hc.hydra.overrides.task)})

    def write(self, run_dir: Path) -> None:
        from marl.io import atomic_write_text

        d = Path(run_dir) / ".hydra"
        d.mkdir(parents=True, exist_ok=True)
        for name, text in self.texts.items():
            atomic_write_text(d / name, text)
