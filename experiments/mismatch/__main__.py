"""The train/deploy mismatch experiment, one command:

    python -m experiments.mismatch                      # tiny default: 3 archs x 3 seeds
    python -m experiments.mismatch seed=0,1 model=qwen3_1.7b model.path=... engine=...

Hydra multirun (conf/mismatch.yaml) makes one job per cell (arch, seed). A job trains the cell
with marl.train in `<mismatch.out>/<arch>/seed<S>/`, evaluates its checkpoint selected on
validation in every deploy harness (and, for per-role policies, with the roles swapped) with
marl.evaluate, and writes `cell.json`. When every job is done, experiments.mismatch.aggregate
writes results.csv, results.md and heatmap.png into `<mismatch.out>`.

Reruns skip finished cells (`cell.json` present) and resume a killed cell wherever it stopped:
training from its last checkpoint (the warm start is the first), the evaluations after training
from the start. A cell directory trained with another config is never overwritten: the job stops
with the keys that differ (marl.runs.changed_keys: the keys marl.train reads, less resume,
threads, cache_dir and logger; `train.steps` too must match).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from marl import evaluate as marl_evaluate
from marl import runs
from marl import train as marl_train
from marl.config import RunSettings, evaluate_settings, run_settings
from marl.io import write_json

CONF = Path(__file__).resolve().parents[2] / "conf"


@dataclass(frozen=True)
class MismatchSettings:
    """The `mismatch` section (conf/mismatch.yaml)."""

    out: str
    deploy: tuple[str, ...]
    swap_roles: bool
    n: int


def check_same_config(cell: Path, s: RunSettings) -> None:
    runs.refuse_other_config(cell, s, "set mismatch.out to another directory or remove that one")


def mismatch_settings(cfg: DictConfig) -> tuple[RunSettings, MismatchSettings]:
    """The cell's training settings and the experiment's own, from the job's config, once."""
    m = OmegaConf.to_container(cfg.mismatch, resolve=True)
    return run_settings(cfg), MismatchSettings(m["out"], tuple(m["deploy"]), m["swap_roles"], m["n"])


def deploy_settings(s: RunSettings, m: MismatchSettings) -> list[tuple[bool, list[str]]]:
    """(swap_roles, harnesses) for each marl.evaluate call of the cell: one call per mapping, so
    the run is rebuilt once for all harnesses played with it."""
    out = [(False, list(m.deploy))]
    team = [h for h in m.deploy if h != "single"]
    if m.swap_roles and s.policy.name in ("per_role", "lora") and team:
        out.append((True, team))
    return out


def run_cell(s: RunSettings, m: MismatchSettings, cell: Path, arch: str = "custom",
             hydra_files: runs.HydraFiles | None = None, env: str | None = None) -> dict:
    """`env`: the env as chosen (conf/env/<choice>.yaml; planpath10's `name` is planpath)."""
    check_same_config(cell, s)
    if (cell / "cell.json").exists():
        print(f"[mismatch] {cell}: finished before, skipped")
        return json.loads((cell / "cell.json").read_text())
    eval_json = cell / "eval.json"
    if not (eval_json.exists() and "final" in json.loads(eval_json.read_text())):
        marl_train.run(s.resumed(cell) if runs.holds_a_run(cell) else s, cell, hydra_files)
    warm = json.loads(eval_json.read_text()).get("warm_start", {}).get("test", {})
    result = {"arch": arch, "seed": s.seed, "env": env or s.task.env, "model": s.model.name,
              "harness": s.task.harness, "policy": s.policy.name,
              "warm_start": {h: warm[h]["success"] for h in warm}, "n": m.n, "deploy": {}}
    base = OmegaConf.to_container(OmegaConf.load(CONF / "evaluate.yaml"))
    for swap, harnesses in deploy_settings(s, m):
        suffix = "_swapped" if swap else ""
        results = marl_evaluate.run(evaluate_settings({
            **base, "run": str(cell), "harnesses": harnesses, "splits": ["test"], "n": m.n, "swap_roles": swap,
            "threads": s.threads, "out": str(cell / f"evaluate{suffix}.json")}))
        for h in harnesses:
            r = results[h]["test"]
            result["deploy"][h + suffix] = {k: r[k] for k in ("success", "ci95", "mean_turns", "parse_fail_rate", "roles")}
    write_json(cell / "cell.json", result)  # written last: its presence means the cell is complete
    return result


@hydra.main(version_base=None, config_path=str(CONF), config_name="mismatch")
def main(cfg: DictConfig) -> None:
    choices = HydraConfig.get().runtime.choices
    run_cell(*mismatch_settings(cfg), Path(HydraConfig.get().runtime.output_dir), choices.get("arch", "custom"),
             runs.HydraFiles.current(cfg), choices.get("env"))


if __name__ == "__main__":
    main()
