"""Train a team of LLM agents with AT-GRPO (or the trajectory-level GRPO baseline).

    python -m marl.train +exp=planning [seed=1 train.steps=50 harness=single policy=per_role ...]

Reads top to bottom: build everything, evaluate the warm start, then loop
rollout -> group -> advantage -> update -> evaluate -> log -> checkpoint, and finally test the
checkpoint selected on validation. Shapes: B samples in a step, K candidates per group.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import time
from collections import defaultdict
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from marl import checkpoint
from marl.advantage import group_advantages
from marl.engine.local import OLD_LOGPROB_MODES, update_policy
from marl.evaluation import run_episodes, summarize
from marl.grouping import check_groups, regroup_by_problem
from marl.logger import make_logger
from marl.policy import POLICY_KINDS, build_run
from marl.rollout import rollout
from roles import harness_names, make_harness

ALGOS = ("at_grpo", "grpo")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


_PEAK_MB = [0.0]  # the process's peak so far: resetting the high-water mark resets ru_maxrss too


def memory_mb() -> dict[str, float]:
    """Resident memory: the process's peak so far (it can only rise), the current one, and the
    peak since the previous call (`step_peak`: Linux lets a process reset its high-water mark, so
    a leak shows as a trend in it, while one large step stays one point)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    out = {}
    status = Path("/proc/self/status")
    if status.exists():
        kb = {k: int(v.split()[0]) for k, v in (l.split(":", 1) for l in status.read_text().splitlines())
              if k in ("VmRSS", "VmHWM")}
        out["system/rss_mb"] = kb["VmRSS"] / 1024
        try:
            Path("/proc/self/clear_refs").write_text("5")  # "5" resets VmHWM (and ru_maxrss) to the current RSS
            out["system/step_peak_rss_mb"] = peak = kb["VmHWM"] / 1024
        except OSError:  # not allowed here (some containers): ru_maxrss still holds the overall peak
            pass
    _PEAK_MB[0] = max(_PEAK_MB[0], peak)
    out["system/peak_rss_mb"] = _PEAK_MB[0]
    return out


def collect(cfg, harness, pset, step: int, rng: random.Random):
    """Roll out one step's problems. Returns (samples, episodes). Problem ids are unique per run:
    the train instance index, walked in order from a seed-dependent offset."""
    a, B = cfg.algo, cfg.train.problems_per_step
    start = cfg.seed * 1_000_000 + step * B
    role_policy = pset.role_policy(harness.role_names)
    rngs = [random.Random(rng.random()) for _ in range(B)]

    async def one(b: int):
        idx = start + b
        inst, pid = harness.task.instance("train", idx), f"train:{idx}"
        if a.name == "at_grpo":  # one tree: K candidates per (turn, role)
            return [await rollout(harness, inst, pid, pset.clients(), role_policy, pset.encoders(),
                                  a.k, cfg.train.temperature, a.alpha, rngs[b], a.select)]
        # trajectory GRPO: K independent episodes of the problem
        return await asyncio.gather(*[
            rollout(harness, inst, pid, pset.clients(), role_policy, pset.encoders(), 1,
                    cfg.train.temperature, a.alpha, random.Random(rngs[b].random()), a.select, episode=e)
            for e in range(a.k)])

    async def all_():
        return await asyncio.gather(*[one(b) for b in range(B)])

    episodes = [ep for eps in asyncio.run(all_()) for ep in eps]
    samples = [s for ep in episodes for s in ep.samples]
    if a.name == "grpo":
        samples = regroup_by_problem(samples, {(ep.problem_id, ep.samples[0].episode): ep.return_
                                               for ep in episodes})
    return samples, episodes


def evaluate(cfg, harnesses, pset, split: str, n: int) -> dict:
    """Greedy episodes on `split` in every evaluation harness: {harness: summary}."""
    out = {}
    for name, h in harnesses.items():
        eps = run_episodes(h, split, n, pset.clients(), pset.role_policy(h.role_names), pset.encoders(),
                           temperature=cfg.eval.temperature, alpha=cfg.algo.alpha, seed=cfg.seed)
        out[name] = summarize(eps)
    return out


def eval_metrics(results: dict, split: str) -> dict:
    return {f"eval/{h}/{split}/{k}": v for h, r in results.items() for k, v in r.items()}


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def check_config(cfg: DictConfig) -> None:
    """Reject settings the run would only trip over later, naming what is allowed."""
    if cfg.algo.name not in ALGOS:
        raise ValueError(f"unknown algo {cfg.algo.name!r}; allowed: {', '.join(ALGOS)}")
    if cfg.algo.k < 2:
        raise ValueError(f"algo.k must be >= 2 to form groups, got {cfg.algo.k}")
    if cfg.policy.name not in POLICY_KINDS:
        raise ValueError(f"unknown policy {cfg.policy.name!r}; allowed: {', '.join(POLICY_KINDS)}")
    for h in [cfg.harness.name, *cfg.eval.harnesses]:
        if h not in harness_names(cfg.env.name):
            raise ValueError(f"unknown harness {h!r} for env {cfg.env.name}; allowed: {', '.join(harness_names(cfg.env.name))}")
    if cfg.train.old_logprob not in OLD_LOGPROB_MODES:
        raise ValueError(f"train.old_logprob={cfg.train.old_logprob!r}; allowed: {', '.join(OLD_LOGPROB_MODES)}")
    if cfg.harness.max_turns < 1 or cfg.train.temperature <= 0 or cfg.train.steps < 1:
        raise ValueError("harness.max_turns and train.steps must be >= 1 and train.temperature > 0; got "
                         f"{cfg.harness.max_turns}, {cfg.train.steps}, {cfg.train.temperature}")


def run(cfg: DictConfig, run_dir: Path) -> dict:
    # ---- build ----------------------------------------------------------------------------
    check_config(cfg)
    torch.set_num_threads(cfg.threads or len(os.sched_getaffinity(0)))  # 0 = every core we may use
    log = tqdm.write
    task, h_kw, pset = build_run(cfg, log=log)
    # Seeded after the build: building the tiny model draws from the global RNGs and loading it
    # from the cache does not, and a run must not depend on whether its model was cached.
    seed_everything(cfg.seed)
    eval_names = list(dict.fromkeys([cfg.harness.name, *cfg.eval.harnesses]))
    harnesses = {n: make_harness(task, n, **h_kw) for n in eval_names}
    harness = harnesses[cfg.harness.name]
    ckpt_dir = run_dir / "checkpoints"
    if not cfg.resume and ((run_dir / "metrics.jsonl").exists() or ckpt_dir.exists()):
        raise ValueError(f"{run_dir} already holds a run; continue it with resume={run_dir} or choose "
                         "another hydra.run.dir (nothing there was changed)")
    (run_dir / "traces").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml")  # what marl.evaluate rebuilds the run from
    logger = make_logger(cfg.logger, run_dir, OmegaConf.to_container(cfg, resolve=True))
    rng = random.Random(cfg.seed)
    results: dict = {}
    start, best = 0, {"score": -1.0, "step": 0}
    if cfg.resume:
        path = checkpoint.latest(Path(cfg.resume))
        if path is None:
            raise ValueError(f"resume={cfg.resume}: no checkpoint found there")
        state = checkpoint.load(path, pset.policies)
        start, best, rng = state["step"], state["best"], state["trainer_rng"]
        results = json.loads((run_dir / "eval.json").read_text()) if (run_dir / "eval.json").exists() else {}
        logger.rewind(start)  # steps logged after that checkpoint are run (and logged) again
        log(f"resumed from {path} at step {start}")
    elif cfg.eval.warm_start:
        t0 = time.perf_counter()
        results["warm_start"] = {"val": evaluate(cfg, harnesses, pset, "val", cfg.eval.n_val),
                                 "test": evaluate(cfg, harnesses, pset, "test", cfg.eval.n_test)}
        logger.log({**eval_metrics(results["warm_start"]["val"], "val"),
                    "timing/eval": time.perf_counter() - t0}, step=0)
        write_json(run_dir / "eval.json", results)
        # The warm start is the first candidate for selection: RL must beat it on validation.
        best = {"score": results["warm_start"]["val"][cfg.harness.name]["success"], "step": 0}
        checkpoint.save(ckpt_dir, 0, pset.policies, {"best": best, "trainer_rng": rng}, best=True)

    # ---- loop -----------------------------------------------------------------------------
    for step in tqdm(range(start, cfg.train.steps), initial=start, total=cfg.train.steps, desc="train"):
        t_step = time.perf_counter()
        for p in pset.policies.values():
            p.client.stats.clear()
        samples, episodes = collect(cfg, harness, pset, step, rng)                # rollout
        t_roll = time.perf_counter()
        check_groups(samples, cfg.algo.k, "at_grpo" if cfg.algo.name == "at_grpo" else "trajectory")  # group
        rewards = torch.tensor([s.reward for s in samples])  # (B,)
        adv, adv_m = group_advantages(rewards, [s.group_id for s in samples], cfg.algo.name,
                                      cfg.algo.eps, cfg.algo.norm_by_std)          # advantage
        for s, a in zip(samples, adv.tolist()):
            s.advantage = a
        t_adv = time.perf_counter()
        by_policy = defaultdict(list)
        for s in samples:
            by_policy[s.policy].append(s)
        upd_m = {}
        for name, ss in by_policy.items():                                         # update
            m = update_policy(pset.policies[name], ss, cfg.algo, cfg.train, rng)
            for k, v in m.items():  # timings add up over policies; the rest is per role when per_role
                if k.startswith("timing/"):
                    upd_m[k] = upd_m.get(k, 0.0) + v
                else:
                    upd_m[k if pset.kind == "shared" else f"role/{name}/" + k.split("/", 1)[1]] = v
        t_upd = time.perf_counter()

        metrics = {**adv_m, **upd_m,
                   "train/success": float(np.mean([e.solved for e in episodes])),
                   "train/reward": float(rewards.mean()),
                   "train/parse_fail_rate": float(np.mean([not s.parse_ok for s in samples])),
                   "train/mean_turns": float(np.mean([e.turns for e in episodes])),
                   "train/samples": float(len(samples)),
                   "train/response_tokens": float(sum(len(s.response_ids) for s in samples))}
        for role in harness.role_names:
            rs = [s for s in samples if s.role == role]
            metrics[f"role/{role}/reward"] = float(np.mean([s.reward for s in rs])) if rs else 0.0
            metrics[f"role/{role}/parse_fail_rate"] = float(np.mean([not s.parse_ok for s in rs])) if rs else 0.0
        gen_s = sum(p.client.stats["seconds"] for p in pset.policies.values())
        metrics.update({"timing/rollout": t_roll - t_step, "timing/generate": gen_s,
                        "timing/env_and_tools": t_roll - t_step - gen_s, "timing/advantage": t_adv - t_roll,
                        "timing/update": t_upd - t_adv,
                        **memory_mb()})
        t0 = time.perf_counter()
        with open(run_dir / "traces" / f"step_{step + 1:06d}.jsonl", "w") as f:
            f.writelines(json.dumps(s.trace()) + "\n" for s in samples)
        metrics["timing/log"] = time.perf_counter() - t0

        done = step + 1
        if done % cfg.train.eval_every == 0 or done == cfg.train.steps:           # evaluate
            t0 = time.perf_counter()
            val = evaluate(cfg, harnesses, pset, "val", cfg.eval.n_val)
            metrics.update(eval_metrics(val, "val"))
            metrics["timing/eval"] = time.perf_counter() - t0
            score = val[cfg.harness.name]["success"]
            if score > best["score"]:  # selection on validation only
                best = {"score": score, "step": done}
                checkpoint.save(ckpt_dir, done, pset.policies, {"best": best, "trainer_rng": rng}, best=True)
        metrics["timing/step"] = time.perf_counter() - t_step
        logger.log(metrics, step=done)                                             # log
        if done % cfg.train.checkpoint_every == 0 or done == cfg.train.steps:      # checkpoint
            checkpoint.save(ckpt_dir, done, pset.policies, {"best": best, "trainer_rng": rng})

    # ---- final: test the checkpoint selected on validation ------------------------------------
    if (ckpt_dir / "best").exists():
        checkpoint.load(ckpt_dir / "best", pset.policies, weights_only_models=True)
    results["final"] = {"val": evaluate(cfg, harnesses, pset, "val", cfg.eval.n_val),
                        "test": evaluate(cfg, harnesses, pset, "test", cfg.eval.n_test),
                        "selected_step": best["step"], "selected_val_success": best["score"]}
    for h in harnesses:  # the layout: {harness: {split: {...}}} for the final policies
        results[h] = {split: results["final"][split][h] for split in ("val", "test")}
    write_json(run_dir / "eval.json", results)
    logger.log(eval_metrics(results["final"]["test"], "test"), step=cfg.train.steps)
    logger.finish()
    print_summary(results, cfg, run_dir)
    return results


def print_summary(results: dict, cfg, run_dir: Path) -> None:
    rows = [f"\n{'harness':<8} {'split':<5} {'warm start':>10} {'after RL':>9}"]
    for h in cfg.eval.harnesses:
        for split in ("val", "test"):
            ws = results.get("warm_start", {}).get(split, {}).get(h, {}).get("success", float("nan"))
            rows.append(f"{h:<8} {split:<5} {ws:>10.1%} {results[h][split]['success']:>9.1%}")
    rows.append(f"trained harness={cfg.harness.name} policy={cfg.policy.name} algo={cfg.algo.name}; "
                f"selected step {results['final']['selected_step']} on validation; outputs in {run_dir}")
    print("\n".join(rows), flush=True)


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
