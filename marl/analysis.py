"""Loading run directories for analysis (notebooks/analysis.ipynb): configs, metrics, traces.

A run directory is what marl.train writes: config.yaml, metrics.jsonl, traces/step_NNNNNN.jsonl,
eval.json. Nothing here needs W&B; `wandb_histories` reads a W&B project when one is given.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from marl.config import saved_config


@dataclass
class Run:
    path: Path
    harness: str
    policy: str
    algo: str
    seed: int
    metrics: list[dict] = field(default_factory=list)  # rows of metrics.jsonl, in order
    eval: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.harness}/{self.policy} seed {self.seed}"

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one metric, in step order, rows without it skipped."""
        pts = sorted((r["step"], r[key]) for r in self.metrics if isinstance(r.get(key), (int, float)))
        return [s for s, _ in pts], [v for _, v in pts]

    def keys(self, prefix: str) -> list[str]:
        return sorted({k for r in self.metrics for k in r if k.startswith(prefix)})


def find_runs(root: str | Path) -> list[Run]:
    """Every run directory under `root` (or `root` itself), sorted by path."""
    root = Path(root)
    runs = []
    for cfg_path in sorted(root.glob("**/config.yaml")):
        d = cfg_path.parent
        if not (d / "metrics.jsonl").exists():
            continue
        c = saved_config(d)
        metrics = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]
        ev = json.loads((d / "eval.json").read_text()) if (d / "eval.json").exists() else {}
        runs.append(Run(d, c["harness"]["name"], c["policy"]["name"], c["algo"]["name"], int(c["seed"]), metrics, ev))
    return runs


def traced_steps(run_dir: str | Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (Path(run_dir) / "traces").glob("step_*.jsonl"))


def trace_episodes(run_dir: str | Path, step: int | None = None) -> list[dict]:
    """The training episodes of one step (the last one by default), read back from its traces:
    per problem, the chosen candidate of every (turn, role) in order, and whether the team solved
    it (a chosen action with team reward 1). Each entry: {problem_id, solved, steps: [trace rows]}."""
    steps = traced_steps(run_dir)
    if not steps:
        return []
    path = Path(run_dir) / "traces" / f"step_{steps[-1] if step is None else step:06d}.jsonl"
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["chosen"]:
            by_problem[row["problem_id"]].append(row)
    # sorted() is stable: within a turn the roles keep the order the rollout wrote them in
    return [{"problem_id": pid, "solved": any(r["team"] >= 1.0 for r in rows),
             "steps": sorted(rows, key=lambda r: r["turn"])} for pid, rows in by_problem.items()]


def format_episode(ep: dict) -> str:
    lines = [f"{ep['problem_id']}: {'solved' if ep['solved'] else 'FAILED'}"]
    for r in ep["steps"]:
        lines.append(f"--- turn {r['turn']} {r['role']} (reward {r['reward']:+.2f}, parse_ok={r['parse_ok']})")
        lines.append(r["prompt"])
        lines.append(f">>> {r['response']}")
    return "\n".join(lines)


def wandb_histories(project: str, group: str | None = None) -> dict[str, list[dict]]:
    """{run name: history rows} of a W&B project (needs network access and a login)."""
    import wandb

    runs = wandb.Api().runs(project, filters={"group": group} if group else None)
    return {r.name: list(r.scan_history()) for r in runs}
