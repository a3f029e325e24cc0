"""The train/deploy mismatch experiment, one command:

    python -m experiments.mismatch                      # tiny default: 3 archs x 3 seeds
    python -m experiments.mismatch seed=0,1 model=qwen3_1.7b model.path=... engine=...

Hydra multirun (conf/mismatch.yaml) makes one job per cell (arch, seed). A job trains the cell
with marl.train in `<mismatch.out>/<arch>/seed<S>/`, evaluates its checkpoint selected on
validation in every deploy harness (and, for per-role policies, with the roles swapped) with
marl.evaluate, and writes `cell.json`. When every job is done, experiments.mismatch.aggregate
writes results.csv, results.md and heatmap.png into `<mismatch.out>`.

Reruns skip finished cells (`cell.json` present) and resume a cell whose training was killed
from its last checkpoint. A cell directory trained with another config is never overwritten:
the job stops with the keys that differ.
"""
from __future__ import annotations

import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from marl import checkpoint
from marl import evaluate as marl_evaluate
from marl import train as marl_train
from marl.io import write_json

CONF = Path(__file__).resolve().parents[2] / "conf"
IGNORED = {"resume", "threads", "mismatch"}  # keys that may differ between a cell's runs


def train_config(cfg: DictConfig) -> dict:
    """The part of the job's config that decides the trained policies."""
    return {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in IGNORED}


def differing_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += differing_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def check_same_config(cell: Path, cfg: DictConfig) -> None:
    saved = cell / "config.yaml"
    if not saved.exists():
        return
    old = {k: v for k, v in OmegaConf.to_container(OmegaConf.load(saved), resolve=True).items() if k not in IGNORED}
    diff = differing_keys(old, train_config(cfg))
    if diff:
        raise ValueError(f"{cell} holds a cell trained with another config (differs in: {', '.join(diff)}); "
                         "set mismatch.out to another directory or remove that one")


def deploy_settings(cfg: DictConfig) -> list[tuple[bool, list[str]]]:
    """(swap_roles, harnesses) for each marl.evaluate call of the cell: one call per mapping, so
    the run is rebuilt once for all harnesses played with it."""
    out = [(False, list(cfg.mismatch.deploy))]
    team = [h for h in cfg.mismatch.deploy if h != "single"]
    if cfg.mismatch.swap_roles and cfg.policy.name in ("per_role", "lora") and team:
        out.append((True, team))
    return out


def run_cell(cfg: DictConfig, cell: Path) -> dict:
    arch = HydraConfig.get().runtime.choices.get("arch", "custom") if HydraConfig.initialized() else "custom"
    check_same_config(cell, cfg)
    if (cell / "cell.json").exists():
        print(f"[mismatch] {cell}: finished before, skipped")
        return json.loads((cell / "cell.json").read_text())
    eval_json = cell / "eval.json"
    if not (eval_json.exists() and "final" in json.loads(eval_json.read_text())):
        if checkpoint.latest(cell) is not None:
            with open_dict(cfg):
                cfg.resume = str(cell)
        marl_train.run(cfg, cell)
    warm = json.loads(eval_json.read_text()).get("warm_start", {}).get("test", {})
    result = {"arch": arch, "seed": cfg.seed, "harness": cfg.harness.name, "policy": cfg.policy.name,
              "warm_start": {h: warm[h]["success"] for h in warm}, "n": cfg.mismatch.n, "deploy": {}}
    base = OmegaConf.load(CONF / "evaluate.yaml")
    for swap, harnesses in deploy_settings(cfg):
        suffix = "_swapped" if swap else ""
        ecfg = OmegaConf.merge(base, {"run": str(cell), "harnesses": harnesses, "splits": ["test"],
                                      "n": cfg.mismatch.n, "swap_roles": swap, "threads": cfg.threads,
                                      "out": str(cell / f"evaluate{suffix}.json")})
        results = marl_evaluate.run(ecfg)
        for h in harnesses:
            r = results[h]["test"]
            result["deploy"][h + suffix] = {k: r[k] for k in ("success", "ci95", "mean_turns", "parse_fail_rate", "roles")}
    write_json(cell / "cell.json", result)  # written last: its presence means the cell is complete
    return result


@hydra.main(version_base=None, config_path=str(CONF), config_name="mismatch")
def main(cfg: DictConfig) -> None:
    run_cell(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
