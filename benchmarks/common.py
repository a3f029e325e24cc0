"""Shared set-up for the benchmarks: the run's config (Hydra overrides, as on the `marl.train`
command line), the task, its harnesses and the cached tiny model, built exactly as a training run
builds them, so a benchmark measures the code a run executes."""
from __future__ import annotations

import json
import platform
import statistics
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from marl.policy import build_run
from roles import harness_names, make_harness

CONF = Path(__file__).resolve().parents[1] / "conf"
RESULTS = Path(__file__).resolve().parent / "results"


def config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("config", overrides=["+exp=planning", "logger=none", *overrides])


def build(cfg):
    """(task, {harness name: Harness}, PolicySet) as `marl.train` builds them."""
    torch.set_num_threads(cfg.threads or torch.get_num_threads())
    torch.manual_seed(cfg.seed)
    task, h_kw, pset = build_run(cfg, log=lambda *a: print(*a, file=sys.stderr))
    harnesses = {n: make_harness(task, n, **h_kw) for n in harness_names(task.name)}
    return task, harnesses, pset


def median(xs):
    return statistics.median(xs)


def machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cuda": torch.cuda.is_available()}


def save(name: str, obj: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**obj, "machine": machine()}, indent=1))
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
    import tempfile
    _, _, pset = build(config(overrides))
    policy = next(iter(pset.policies.values()))
    tmp = tempfile.TemporaryDirectory()
    policy.model.save_pretrained(tmp.name)
    policy.tokenizer.save_pretrained(tmp.name)
    return f"model.path={tmp.name}", tmp


def train_metrics(overrides: list[str], steps: int) -> list[dict]:
    """Run `marl.train` for `steps` steps in this process and return its metrics rows."""
    import tempfile
    from marl.train import run
    cfg = config(overrides)
    cfg.train.steps = steps
    with tempfile.TemporaryDirectory() as d:
        run(cfg, Path(d))
        return [json.loads(line) for line in (Path(d) / "metrics.jsonl").read_text().splitlines()]
