"""Evaluate saved policies in any harness, on any split, greedy or sampled.

    python -m marl.evaluate run=<run dir> [checkpoint=best|latest|<dir>] [harnesses=[single,mas]]
        [splits=[test]] [n=100] [samples=1 temperature=0] [swap_roles=true] [+roles.tool=plan]

The run's own config (`<run>/config.yaml`, written by marl.train) rebuilds its task, harness settings and
policies (`marl.config.evaluate_settings` reads both configs once and checks them); the checkpoint's weights are loaded into them. Which policy plays which role
(`marl.routing.Routing`):
- default: the run's routing (a shared policy plays every role; per-role and LoRA policies play
  their own role, and a role the training harness lacks is played by its last role's policy);
- `swap_roles=true`: per-role (or LoRA) policies trade places (each role is played by the other's);
- `+roles.<role>=<policy>`: an explicit mapping, applied last (Hydra adds keys with "+").

Per harness and split: success with a 95% confidence interval, pass@k (k = 1, 2, 4, ... up to
`samples`, unbiased estimator), mean turns, parse-failure rate, per-role reward. Writes JSON
(`out=`, default `<run>/evaluate.json`) and prints a table.
"""
from __future__ import annotations

import asyncio
import math
from contextlib import closing
from pathlib import Path

import hydra
from omegaconf import DictConfig

from marl import checkpoint
from marl.build import BuiltRun, build_run
from marl.config import EvaluateSettings, evaluate_settings
from marl.episodes import play, summarize
from marl.io import set_threads, write_json
from marl.routing import Routing
from roles import make_harness


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c succeeded: 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (sound near 0 and 1, unlike p +- 2se)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluate_split(harness, split: str, n: int, samples: int, temperature: float, engine, routing: Routing,
                   alpha: float, seed: int, loop: asyncio.Runner) -> dict:
    episodes = [loop.run(play(harness, split, n, engine, routing, temperature=temperature, alpha=alpha, seed=seed + s))
                for s in range(samples)]  # samples x n
    flat = [e for eps in episodes for e in eps]
    out = summarize(flat)
    solved = [sum(eps[i].solved for eps in episodes) for i in range(n)]  # per problem, of `samples`
    if samples == 1:
        out["ci95"] = list(wilson(sum(solved), n))
    else:  # problems are the independent units; a normal interval over their success rates
        rates = [c / samples for c in solved]
        sd = math.sqrt(sum((r - out["success"]) ** 2 for r in rates) / max(n - 1, 1))
        half = 1.96 * sd / math.sqrt(n)
        out["ci95"] = [max(0.0, out["success"] - half), min(1.0, out["success"] + half)]
    k = 1
    while k <= samples:
        out[f"pass@{k}"] = sum(pass_at_k(samples, c, k) for c in solved) / n
        k *= 2
    out.update(samples=samples, temperature=temperature, roles=routing.as_dict())
    return out


def routings(built: BuiltRun, harnesses: dict, swap: bool, explicit: dict) -> dict[str, Routing]:
    """{harness: Routing}: the run's own, swapped if asked, then the explicit role -> policy
    mapping (applied to the harnesses that have the role). Unknown names are refused."""
    all_roles = sorted({r for h in harnesses.values() for r in h.role_names})
    for role in explicit:
        if role not in all_roles:
            raise ValueError(f"roles.{role}: no such role in {list(harnesses)}; roles: {all_roles}")
    pols = built.engine.policy_ids
    out = {}
    for name, h in harnesses.items():
        routing = built.routing(h.role_names)
        if swap:
            routing = routing.swapped(pols)
        out[name] = routing.override({r: p for r, p in explicit.items() if r in h.role_names}, pols)
    return out


def run(e: EvaluateSettings) -> dict:
    set_threads(e.threads)
    path = checkpoint.resolve(e.run_dir, e.checkpoint)
    built = build_run(e.trained)
    with closing(built.engine), asyncio.Runner() as loop:  # engine=verl: its GPU stacks end here
        state = checkpoint.load(path, built.engine, weights_only=True)
        results: dict = {"run": str(e.run_dir), "checkpoint": str(path), "step": state["step"]}
        hs = {name: make_harness(built.task, name, **built.h_kw) for name in e.harnesses}
        routes = routings(built, hs, e.swap_roles, e.roles)
        for name, h in hs.items():
            results[name] = {split: evaluate_split(h, split, e.n, e.samples, e.temperature, built.engine,
                                                   routes[name], e.trained.algo.alpha, e.seed, loop)
                             for split in e.splits}
    write_json(e.out, results)
    print_table(results, e.harnesses)
    print(f"wrote {e.out}")
    return results


def print_table(results: dict, harnesses) -> None:
    print(f"\n{'harness':<8} {'split':<5} {'success':>8} {'95% CI':>13} {'turns':>6} {'parse fail':>10}  roles")
    for h in harnesses:
        for split, r in results[h].items():
            lo, hi = r["ci95"]
            roles = ", ".join(f"{k}<-{v}" for k, v in r["roles"].items())
            print(f"{h:<8} {split:<5} {r['success']:>8.1%} {f'{lo:.0%}-{hi:.0%}':>13} {r['mean_turns']:>6.2f} "
                  f"{r['parse_fail_rate']:>10.1%}  {roles}")


@hydra.main(version_base=None, config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run(evaluate_settings(cfg))


if __name__ == "__main__":
    main()
