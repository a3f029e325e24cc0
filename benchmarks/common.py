"""Shared set-up for the benchmarks: the run's settings (Hydra overrides, as on the `marl.train`
command line, made into `marl.config.RunSettings`), the task, its harnesses and the engine holding the policies (the cached tiny
model), built exactly as a training run builds them, so a benchmark measures the code a run
executes. Benchmarks may reach into the local engine's objects (`engine.policies[pid].module`,
`engine.tokenizer`, `engine.clients[pid].runner`); the trainer never does."""
from __future__ import annotations

import contextlib
import json
import platform
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from marl.build import BuiltRun, build_run
from marl.config import RunSettings, run_settings
from marl.io import set_threads, write_json
from roles import harness_names, make_harness

CONF = Path(__file__).resolve().parents[1] / "conf"
RESULTS = Path(__file__).resolve().parent / "results"


def config(overrides: list[str]) -> RunSettings:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return run_settings(compose("config", overrides=["+exp=planning", "logger=none", *overrides]))


def build(cfg: RunSettings) -> tuple[BuiltRun, dict]:
    """(BuiltRun, {harness name: Harness} for every harness of the task) as `marl.train` builds
    them: torch's threads set, the run built, the global RNGs seeded after the build."""
    set_threads(cfg.threads)
    built = build_run(cfg, log=lambda *a: print(*a, file=sys.stderr))
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    harnesses = {n: make_harness(built.task, n, **built.h_kw) for n in harness_names(built.task.name)}
    return built, harnesses


@contextlib.contextmanager
def train_run(cfg: RunSettings) -> Iterator:
    """`marl.train`'s own `Run` for `cfg` (`marl.train.build`: threads, engine, seeding, the
    trainer's RNG), in a temporary run directory; for benchmarks that call the trainer's step
    functions (`collect`, ...)."""
    from marl.train import build as build_train

    with tempfile.TemporaryDirectory() as d:
        r = build_train(cfg, Path(d))
        try:
            yield r
        finally:
            r.logger.finish()
            r.engine.close()


def first_policy(engine):
    """The local engine's first policy (`FullPolicy` or `LoraPolicy`): `.module`, `.pad_id`."""
    return engine.policies[engine.policy_ids[0]]


def median(xs):
    return statistics.median(xs)


def machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cuda": torch.cuda.is_available()}


def save(name: str, obj: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    write_json(path, {**obj, "machine": machine()})
    return path


def table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (x + 2) for x in w) + "|")
    return "\n".join(lines)


def saved_default(overrides: list[str]) -> tuple[str, object]:
    """Save the run's warm start (built or loaded from the cache, as `marl.train` would) to a
    temporary directory and return the `model.path=` override that loads it, so settings that
    change the harness (max_turns, ...) measure the same weights instead of keying a new build.
    Returns (override, TemporaryDirectory): keep the latter alive while the path is used."""
    built, _ = build(config(overrides))
    engine = built.engine
    model = first_policy(engine).module
    if hasattr(model, "merge_and_unload"):  # policy=lora: a PEFT model whose adapters start at
        model = model.merge_and_unload()    # zero, so the merged model is the warm start itself
    tmp = tempfile.TemporaryDirectory()
    model.save_pretrained(tmp.name)
    engine.tokenizer.save_pretrained(tmp.name)
    engine.close()
    return f"model.path={tmp.name}", tmp


@contextlib.contextmanager
def trained(overrides: list[str], steps: int) -> Iterator[Path]:
    """Run `marl.train` for `steps` steps in this process; yields its run directory (temporary:
    read what you need inside the `with`)."""
    from marl.train import run
    cfg = config(overrides).with_steps(steps)
    with tempfile.TemporaryDirectory() as d:
        run(cfg, Path(d))
        yield Path(d)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def train_metrics(overrides: list[str], steps: int) -> list[dict]:
    """Run `marl.train` for `steps` steps in this process and return its metrics rows."""
    with trained(overrides, steps) as d:
        return read_jsonl(d / "metrics.jsonl")
