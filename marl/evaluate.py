"""Evaluate saved policies in any harness, on any split or test set of their task family, greedy or sampled.

    python -m marl.evaluate run=<run dir> [checkpoint=best|latest|<dir>] [harnesses=[single,mas]]
        [splits=[test]] [n=null|<problems>] [samples=1 temperature=0] [swap_roles=true] [+roles.tool=plan]
        [env=aime24 env.data_dir=<dir>]

The run's own config (`<run>/config.yaml`, written by marl.train) rebuilds its task, harness settings and
policies (`marl.config.evaluate_settings` reads both configs once and checks them); the checkpoint's
weights are loaded into them. `env=<name>` (a file of conf/env/, with its options, e.g. `env.data_dir`)
evaluates on another task of the run's harness family instead: a maths run on aime24, aime25 or
olympiadbench, a code run on livecodebench, apps or codecontests (their test split; `n=null`, the
default, takes all of it); the run's harness settings and policies are kept. A data set is read and
sized before the model loads. Which policy plays which role
(`marl.routing.Routing`):
- default: the run's routing (a shared policy plays every role; per-role and LoRA policies play
  their own role, and a role the training harness lacks is played by its last role's policy);
- `swap_roles=true`: per-role (or LoRA) policies trade places (each role is played by the other's);
- `+roles.<role>=<policy>`: an explicit mapping, applied last (Hydra adds keys with "+").

Per harness and split: success with a 95% confidence interval, pass@k (k = 1, 2, 4, ... up to
`samples`, unbiased estimator), mean turns, parse-failure rate, episodes ended on a prompt over
the engine's budget (`prompt_overflow`, marl.rollout), per-role reward. Writes JSON
(`out=`, default `<run>/evaluate.json`; with `env=`, `<run>/evaluate_<env>.json`, the env recorded
under "env") and prints a table. Every setting, the checkpoint's files, the role -> policy names
and the output's directory are checked before the model loads.
"""
from __future__ import annotations

import asyncio
import math
import sys
from contextlib import closing
from pathlib import Path

import hydra
from omegaconf import DictConfig

from marl import checkpoint
from marl.build import build_run
from marl.config import GENERATED_N, EvaluateSettings, evaluate_settings
from marl.episodes import play, summarize
from marl.io import check_writable, set_threads, write_json
from marl.routing import Routing, policy_ids
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


def routings(kind: str, train_roles: list[str], harnesses: dict, swap: bool, explicit: dict) -> dict[str, Routing]:
    """{harness: Routing}: the run's own (its policy kind and training roles), swapped if asked,
    then the explicit role -> policy mapping (applied to the harnesses that have the role).
    Unknown names are refused; nothing here needs the model, so they are refused before it loads."""
    all_roles = sorted({r for h in harnesses.values() for r in h.role_names})
    for role in explicit:
        if role not in all_roles:
            raise ValueError(f"roles.{role}: no such role in {list(harnesses)}; roles: {all_roles}")
    pols = policy_ids(kind, train_roles)
    out = {}
    for name, h in harnesses.items():
        routing = Routing.default(kind, train_roles, h.role_names)
        if swap:
            routing = routing.swapped(pols)
        out[name] = routing.override({r: p for r, p in explicit.items() if r in h.role_names}, pols)
    return out


def split_sizes(task, splits, n: int | None) -> dict[str, int]:
    """{split: problems evaluated}. A task read from files (envs.base.FileSplits) is read here, so
    a split it lacks (a benchmark has a test split only) or an `n` past a split's size is refused
    before the model loads; n=None takes its whole split (GENERATED_N of a generated task)."""
    from envs.base import FileSplits

    out = {}
    for split in splits:
        if not isinstance(task, FileSplits):
            out[split] = n or GENERATED_N
            continue
        try:
            size = len(task.problems(split))
        except ValueError as err:
            raise ValueError(f"splits={list(splits)}: {task.name} (data_dir={task.data_dir}) has no usable {split} "
                             f"split: {err}") from err
        if n is not None and n > size:
            raise ValueError(f"n={n}, but the {split} split of {task.name} holds {size} problems "
                             f"(data_dir={task.data_dir}): set n <= {size}, or n=null for all of them")
        out[split] = n or size
    return out


def evaluated_task(e: EvaluateSettings):
    """(task, {harness: Harness}, {split: n}) of the evaluation, checked before the model loads."""
    import envs

    t = e.task
    task = envs.make(t.env, **t.env_kw)  # refuses an option the task does not take, naming those it does
    harnesses = {name: make_harness(task, name, **t.harness_kw) for name in e.harnesses}
    return task, harnesses, split_sizes(task, e.splits, e.n)


def run(e: EvaluateSettings) -> dict:
    set_threads(e.threads)
    path = checkpoint.resolve(e.run_dir, e.checkpoint)  # a complete checkpoint, or refused
    task, hs, sizes = evaluated_task(e)
    train_roles = make_harness(task, e.trained.task.harness, **e.task.harness_kw).role_names
    routes = routings(e.trained.policy.name, train_roles, hs, e.swap_roles, e.roles)
    check_writable(e.out.parent, "out", "the results are written there")  # before the work, not after
    built = build_run(e.trained)  # the run's own task builds (or finds) its model; `task` is played
    with closing(built.engine), asyncio.Runner() as loop:  # engine=verl: its GPU stacks end here
        state = checkpoint.load(path, built.engine, weights_only=True)
        results: dict = {"run": str(e.run_dir), "checkpoint": str(path), "step": state["step"]}
        if e.env is not None:
            results["env"] = dict(e.env)
        for name, h in hs.items():
            results[name] = {split: evaluate_split(h, split, sizes[split], e.samples, e.temperature, built.engine,
                                                   routes[name], e.trained.algo.alpha, e.seed, loop)
                             for split in e.splits}
    write_json(e.out, results)
    if e.env is not None:
        print(f"\nenv {task.name}" + (f" ({e.env['data_dir']})" if e.env.get("data_dir") else ""))
    print_table(results, e.harnesses)
    print(f"wrote {e.out}")
    return results


def print_table(results: dict, harnesses) -> None:
    print(f"\n{'harness':<8} {'split':<5} {'success':>8} {'95% CI':>13} {'turns':>6} {'parse fail':>10}  roles")
    for h in harnesses:
        for split, r in results[h].items():
            lo, hi = r["ci95"]
            roles = ", ".join(f"{k}<-{v}" for k, v in r["roles"].items())
            over = f"; {r['prompt_overflow']} ended on a prompt over the budget" if r["prompt_overflow"] else ""
            print(f"{h:<8} {split:<5} {r['success']:>8.1%} {f'{lo:.0%}-{hi:.0%}':>13} {r['mean_turns']:>6.2f} "
                  f"{r['parse_fail_rate']:>10.1%}  {roles}{over}")


@hydra.main(version_base=None, config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run(evaluate_settings(cfg))


def refuse_misplaced_env(argv: list[str]) -> None:
    """The env forms Hydra refuses with hints that lead elsewhere: `+env=<name>` (its hint after a
    plain `env=` where the group is absent; here it is an empty group, and Hydra says "Multiple values
    for env"), and `env.<key>=` without `env=<name>` (Hydra hints `+env.<key>`, which names no task)."""
    chosen = any(a.startswith("env=") for a in argv)
    for arg in argv:
        if arg.startswith("+env="):
            raise SystemExit(f"marl.evaluate: {arg}: env is a group of marl.evaluate's config already (none: the "
                             f"run's own task); choose it without '+': env={arg[len('+env='):]} env.data_dir=<dir>")
        if arg.lstrip("+").startswith("env.") and not chosen:
            raise SystemExit(f"marl.evaluate: {arg}: choose the task first, then set its options: env=<name> "
                             f"{arg.lstrip('+')} (e.g. env=aime24 env.data_dir=<dir>; the names: the files of conf/env/)")


if __name__ == "__main__":
    refuse_misplaced_env(sys.argv[1:])
    main()
