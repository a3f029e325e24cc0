"""Loggers. `metrics.jsonl` is always written; W&B is optional and has a do-nothing twin, so the
training loop never asks whether W&B is on."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Protocol

from marl.config import LoggerSettings
from marl.io import append_jsonl, atomic_write_text, read_jsonl


class Logger(Protocol):
    def log(self, metrics: dict, step: int) -> None: ...

    def rewind(self, step: int) -> None: ...

    def finish(self) -> None: ...


class NullLogger:
    def log(self, metrics: dict, step: int) -> None:
        pass

    def rewind(self, step: int) -> None:
        pass

    def finish(self) -> None:
        pass


class JsonlLogger:
    """One JSON object per line: {"step": N, <namespaced keys>}. Appends, so a resumed run
    continues the same file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, metrics: dict, step: int) -> None:
        append_jsonl(self.path, {"step": step, **{k: _clean(v) for k, v in metrics.items()}})

    def rewind(self, step: int) -> None:
        """Drop the rows after `step` (a run killed after logging a step but before its
        checkpoint will log that step again when resumed). Atomic: a kill here loses nothing."""
        if not self.path.exists():
            return
        keep = [row for row in read_jsonl(self.path) if row["step"] <= step]  # a cut-short last row: dropped
        atomic_write_text(self.path, "".join(json.dumps(row) + "\n" for row in keep))

    def finish(self) -> None:
        pass


class WandbLogger:
    def __init__(self, s: LoggerSettings, run_dir: Path, config: dict):
        import wandb  # imported here: runs with logger=none never pay for it

        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project=s.project, entity=s.entity, group=s.group, mode=s.mode, dir=str(run_dir),
                              config=config, name=s.run_name, resume="allow", id=s.id)

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    def rewind(self, step: int) -> None:
        pass  # W&B keeps its history; rows logged again at an old step are dropped by W&B itself

    def finish(self) -> None:
        self.run.finish()


class MultiLogger:
    def __init__(self, *loggers):
        self.loggers = loggers

    def log(self, metrics: dict, step: int) -> None:
        for lg in self.loggers:
            lg.log(metrics, step)

    def rewind(self, step: int) -> None:
        for lg in self.loggers:
            lg.rewind(step)

    def finish(self) -> None:
        for lg in self.loggers:
            lg.finish()


def make_logger(s: LoggerSettings, run_dir: Path, config: dict) -> Logger:
    """metrics.jsonl, and W&B when `s.name` is wandb (marl.config refuses other names)."""
    jsonl = JsonlLogger(Path(run_dir) / "metrics.jsonl")
    return MultiLogger(jsonl, WandbLogger(s, run_dir, config) if s.name == "wandb" else NullLogger())


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN; keep it visible rather than crash the run
    return v
