"""W&B sweep files over role architectures, and their offline equivalent (Hydra multirun).

A sweep file is an ordinary W&B sweep whose command is the ordinary `marl.train` command; this
package reads one back into the Hydra multirun that trains the same grid without W&B's server.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import yaml

SWEEPS = Path(__file__).resolve().parent


def names() -> list[str]:
    return sorted(p.stem for p in SWEEPS.glob("*.yaml"))


def load(name: str) -> dict:
    path = SWEEPS / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"unknown sweep {name!r}; allowed: {', '.join(names())}")
    return yaml.safe_load(path.read_text())


def _values(param: dict) -> list:
    """A W&B parameter's values: `values: [...]` or a single `value:`."""
    return param["values"] if "values" in param else [param["value"]]


def fixed_args(sweep: dict) -> list[str]:
    """The command's own overrides (after `marl.train`, W&B's ${...} macros left out)."""
    cmd = [str(c) for c in sweep["command"]]
    if "marl.train" not in cmd:
        raise ValueError(f"sweep {sweep.get('name')}: the command must run marl.train, got {cmd}")
    return [c for c in cmd[cmd.index("marl.train") + 1:] if not c.startswith("${")]


def grid(sweep: dict) -> list[list[str]]:
    """Every run's overrides in W&B's grid order: the fixed ones, then key=value per parameter."""
    if sweep.get("method") != "grid":
        raise ValueError(f"sweep {sweep.get('name')}: only method: grid has an offline equivalent")
    keys = list(sweep["parameters"])
    values = [_values(p) for p in sweep["parameters"].values()]
    return [fixed_args(sweep) + [f"{k}={v}" for k, v in zip(keys, combo)] for combo in itertools.product(*values)]


def multirun_args(name: str, extra: list[str] = ()) -> list[str]:
    """`python -m marl.train` arguments of the offline multirun: W&B offline, one sweep directory."""
    sweep = load(name)
    fixed = [a for a in fixed_args(sweep) if not a.startswith("logger.mode=")]
    params = [f"{k}={','.join(str(v) for v in _values(p))}" for k, p in sweep["parameters"].items()]
    return ["-m", *fixed, "logger.mode=offline", *params, f"hydra.sweep.dir=runs/sweeps/{name}", *extra]
