"""Train a team of LLM agents with AT-GRPO (or the trajectory-level GRPO baseline).

    python -m marl.train +exp=planning [seed=1 train.steps=50 harness=single policy=per_role ...]

`run` reads top to bottom: build everything, resume or evaluate the warm start, then loop
rollout -> group -> advantage -> update -> sync -> evaluate -> log -> checkpoint, and finally
test the checkpoint selected on validation. The model runtime is the engine's (`marl.engine`);
this file owns the algorithm. Shapes: B samples in a step, K candidates per group.
"""
from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from marl import checkpoint
from marl.advantage import group_advantages
from marl.build import BuiltRun, build_run, check_model_and_device
from marl.engine import UpdateSpec, engine_names
from marl.engine.spec import POLICY_KINDS
from marl.episodes import play, summarize
from marl.grouping import check_groups, regroup_by_problem
from marl.io import set_threads, write_json
from marl.logger import make_logger
from marl.metrics import eval_metrics, memory_mb, merge_updates, rollout_metrics
from marl.rollout import RolloutJob, RolloutSpec
from marl.types import TrainSample
from roles import harness_names, make_harness

ALGOS = ("at_grpo", "grpo")


def run(cfg: DictConfig, run_dir: Path) -> dict:
    r = build(cfg, run_dir)                                                        # build
    with closing(r.engine), asyncio.Runner() as loop:  # one event loop; the engine closed however the run ends
        start = resume_or_warm_start(r, loop)
        for step in tqdm(range(start, cfg.train.steps), initial=start, total=cfg.train.steps, desc="train"):
            t = {"start": time.perf_counter()}
            r.engine.reset_stats()
            samples, episodes = loop.run(collect(r, step))                         # rollout
            t["rollout"] = time.perf_counter()
            check_groups(samples, cfg.algo.k, "at_grpo" if cfg.algo.name == "at_grpo" else "trajectory")  # group
            batch, adv_m = advantages(cfg, samples)                                # advantage
            t["advantage"] = time.perf_counter()
            upd_m = update(r, batch)                                               # update
            t["update"] = time.perf_counter()
            r.engine.sync_weights()                                                # sync
            t["sync"] = time.perf_counter()
            metrics = {**adv_m, **upd_m, **rollout_metrics(samples, episodes, r.harness.role_names),
                       **step_timings(r, t), **memory_mb()}
            write_traces(r, step, batch, metrics)
            done = step + 1
            if done % cfg.train.eval_every == 0 or done == cfg.train.steps:       # evaluate
                validate_and_select(r, loop, done, metrics)
            metrics["timing/step"] = time.perf_counter() - t["start"]
            r.logger.log(metrics, step=done)                                       # log
            if done % cfg.train.checkpoint_every == 0 or done == cfg.train.steps:  # checkpoint
                checkpoint.save(r.ckpt_dir, done, r.engine, trainer_state(r))
        results = final_test(r, loop)
    r.logger.finish()
    print_summary(results, cfg, run_dir)
    return results


# ---- build and resume ------------------------------------------------------------------------

@dataclass
class Run:
    """Everything one training run holds; the helpers below read and advance it."""

    cfg: DictConfig
    run_dir: Path
    built: BuiltRun
    harnesses: dict  # every evaluation harness by name; the training harness among them
    logger: object
    update_spec: UpdateSpec
    rollout_spec: RolloutSpec
    rng: random.Random
    results: dict = field(default_factory=dict)
    best: dict = field(default_factory=lambda: {"score": -1.0, "step": 0})

    @property
    def engine(self):
        return self.built.engine

    @property
    def harness(self):
        return self.harnesses[self.cfg.harness.name]

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"


def check_config(cfg: DictConfig) -> None:
    """Reject settings the run would only trip over later, naming what is allowed."""
    if cfg.algo.name not in ALGOS:
        raise ValueError(f"unknown algo {cfg.algo.name!r}; allowed: {', '.join(ALGOS)}")
    if cfg.algo.k < 2:
        raise ValueError(f"algo.k must be >= 2 to form groups, got {cfg.algo.k}")
    if cfg.policy.name not in POLICY_KINDS:
        raise ValueError(f"unknown policy {cfg.policy.name!r}; allowed: {', '.join(POLICY_KINDS)}")
    if cfg.engine.name not in engine_names():
        raise ValueError(f"unknown engine {cfg.engine.name!r}; registered: {', '.join(engine_names())}")
    for h in [cfg.harness.name, *cfg.eval.harnesses]:
        if h not in harness_names(cfg.env.name):
            raise ValueError(f"unknown harness {h!r} for env {cfg.env.name}; allowed: {', '.join(harness_names(cfg.env.name))}")
    UpdateSpec.from_config(cfg)  # refuses an unknown train.old_logprob
    if cfg.harness.max_turns < 1 or cfg.train.temperature <= 0 or cfg.train.steps < 1:
        raise ValueError("harness.max_turns and train.steps must be >= 1 and train.temperature > 0; got "
                         f"{cfg.harness.max_turns}, {cfg.train.steps}, {cfg.train.temperature}")
    e = cfg.eval
    if e.val_samples < 1 or (e.val_samples > 1 and e.val_temperature <= 0):
        raise ValueError(f"eval.val_samples must be >= 1, and > 1 only with eval.val_temperature > 0 (greedy "
                         f"episodes repeat); got val_samples={e.val_samples}, val_temperature={e.val_temperature}")
    check_model_and_device(cfg)


def build(cfg: DictConfig, run_dir: Path) -> Run:
    check_config(cfg)
    ckpt_dir = run_dir / "checkpoints"
    if not cfg.resume and ((run_dir / "metrics.jsonl").exists() or ckpt_dir.exists()):
        raise ValueError(f"{run_dir} already holds a run; continue it with resume={run_dir} or choose "
                         "another hydra.run.dir (nothing there was changed)")
    set_threads(cfg.threads)
    built = build_run(cfg, log=tqdm.write)
    # Seeded after the build: building the tiny model draws from the global RNGs and loading it
    # from the cache does not, and a run must not depend on whether its model was cached.
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    names = list(dict.fromkeys([cfg.harness.name, *cfg.eval.harnesses]))
    (run_dir / "traces").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml")  # what marl.evaluate rebuilds the run from
    a = cfg.algo
    return Run(cfg, run_dir, built, {n: make_harness(built.task, n, **built.h_kw) for n in names},
               make_logger(cfg.logger, run_dir, OmegaConf.to_container(cfg, resolve=True)),
               UpdateSpec.from_config(cfg), RolloutSpec(a.k, cfg.train.temperature, a.alpha, a.select),
               random.Random(cfg.seed))


def resume_or_warm_start(r: Run, loop: asyncio.Runner) -> int:
    """The first step to train: after the latest checkpoint of `resume`, else 0 (the warm start
    evaluated, and saved as the first candidate for selection: RL must beat it on validation)."""
    cfg = r.cfg
    if cfg.resume:
        path = checkpoint.latest(Path(cfg.resume))
        if path is None:
            raise ValueError(f"resume={cfg.resume}: no checkpoint found there")
        state = checkpoint.load(path, r.engine)
        r.best, r.rng = state["best"], state["trainer_rng"]
        eval_json = r.run_dir / "eval.json"
        r.results = json.loads(eval_json.read_text()) if eval_json.exists() else {}
        r.logger.rewind(state["step"])  # steps logged after that checkpoint are run (and logged) again
        tqdm.write(f"resumed from {path} at step {state['step']}")
        return state["step"]
    if cfg.eval.warm_start:
        t0 = time.perf_counter()
        r.results["warm_start"] = {"val": loop.run(score(r, "val", cfg.eval.n_val)),
                                   "test": loop.run(score(r, "test", cfg.eval.n_test))}
        r.logger.log({**eval_metrics(r.results["warm_start"]["val"], "val"),
                      "timing/eval": time.perf_counter() - t0}, step=0)
        write_json(r.run_dir / "eval.json", r.results)
        r.best = {"score": r.results["warm_start"]["val"][cfg.harness.name]["success"], "step": 0}
        checkpoint.save(r.ckpt_dir, 0, r.engine, trainer_state(r), best=True)
    return 0


def trainer_state(r: Run) -> dict:
    return {"best": r.best, "trainer_rng": r.rng}


# ---- one step ----------------------------------------------------------------------------------

async def collect(r: Run, step: int):
    """Roll out one step's problems. Returns (samples, episodes). Problem ids are unique per run:
    the train instance index, walked in order from a seed-dependent offset. AT-GRPO: one tree
    per problem (K candidates per (turn, role)); trajectory GRPO: K independent episodes."""
    cfg, h = r.cfg, r.harness
    B, K = cfg.train.problems_per_step, cfg.algo.k
    start = cfg.seed * 1_000_000 + step * B
    rngs = [random.Random(r.rng.random()) for _ in range(B)]
    jobs = []
    for b in range(B):
        idx = start + b
        inst, pid = h.task.instance("train", idx), f"train:{idx}"
        routing = r.built.routing(h.role_names)
        if cfg.algo.name == "at_grpo":
            jobs.append(RolloutJob(h, inst, pid, routing, r.rollout_spec, rngs[b]))
        else:
            one = RolloutSpec(1, r.rollout_spec.temperature, r.rollout_spec.alpha, r.rollout_spec.select)
            jobs += [RolloutJob(h, inst, pid, routing, one, random.Random(rngs[b].random()), episode=e)
                     for e in range(K)]
    episodes = await r.engine.gather(jobs)
    samples = [s for ep in episodes for s in ep.samples]
    if cfg.algo.name == "grpo":
        samples = regroup_by_problem(samples, {(ep.problem_id, ep.samples[0].episode): ep.return_
                                               for ep in episodes})
    return samples, episodes


def advantages(cfg, samples) -> tuple[list[TrainSample], dict]:
    rewards = torch.tensor([s.reward for s in samples])  # (B,)
    adv, m = group_advantages(rewards, [s.group_id for s in samples], cfg.algo.name, cfg.algo.eps,
                              cfg.algo.norm_by_std)  # (B,)
    return [TrainSample(s, a) for s, a in zip(samples, adv.tolist())], m


def update(r: Run, batch: list[TrainSample]) -> dict:
    """One update per policy, on the samples it generated."""
    by_policy = defaultdict(list)
    for x in batch:
        by_policy[x.sample.policy].append(x)
    per = {pid: r.engine.update(pid, xs, r.update_spec, r.rng) for pid, xs in by_policy.items()}
    return merge_updates(per, shared=r.engine.spec.kind == "shared")


def step_timings(r: Run, t: dict) -> dict:
    gen = r.engine.stats()
    return {"timing/rollout": t["rollout"] - t["start"], "timing/generate": gen.get("seconds", 0.0),
            "timing/env_and_tools": t["rollout"] - t["start"] - gen.get("seconds", 0.0),
            "timing/advantage": t["advantage"] - t["rollout"], "timing/update": t["update"] - t["advantage"],
            "timing/sync": t["sync"] - t["update"]}


def write_traces(r: Run, step: int, batch: list[TrainSample], metrics: dict) -> None:
    t0 = time.perf_counter()
    with open(r.run_dir / "traces" / f"step_{step + 1:06d}.jsonl", "w") as f:
        f.writelines(json.dumps(x.trace()) + "\n" for x in batch)
    metrics["timing/log"] = time.perf_counter() - t0


# ---- evaluation and selection ------------------------------------------------------------------

async def score(r: Run, split: str, n: int) -> dict:
    """Episodes on `split` in every evaluation harness: {harness: summary}. Test: one episode per
    problem at eval.temperature (greedy by default); validation: eval.val_samples episodes per
    problem at eval.val_temperature, success their mean (the paper's maths: 5 at 0.6)."""
    e = r.cfg.eval
    samples, temperature = (e.val_samples, e.val_temperature) if split == "val" else (1, e.temperature)
    out = {}
    for name, h in r.harnesses.items():
        eps = []  # samples x n, flat
        for s in range(samples):
            eps += await play(h, split, n, r.engine, r.built.routing(h.role_names), temperature=temperature,
                              alpha=r.cfg.algo.alpha, seed=r.cfg.seed + 1000 * s)
        out[name] = summarize(eps)
    return out


def validate_and_select(r: Run, loop: asyncio.Runner, done: int, metrics: dict) -> None:
    """Validation after `done` steps; a new best (on validation only, never test) is saved."""
    t0 = time.perf_counter()
    val = loop.run(score(r, "val", r.cfg.eval.n_val))
    metrics.update(eval_metrics(val, "val"))
    metrics["timing/eval"] = time.perf_counter() - t0
    if val[r.cfg.harness.name]["success"] > r.best["score"]:
        r.best = {"score": val[r.cfg.harness.name]["success"], "step": done}
        checkpoint.save(r.ckpt_dir, done, r.engine, trainer_state(r), best=True)


def final_test(r: Run, loop: asyncio.Runner) -> dict:
    """Validation and test of the checkpoint selected on validation, into eval.json."""
    cfg, res = r.cfg, r.results
    if (r.ckpt_dir / "best").exists():
        checkpoint.load(r.ckpt_dir / "best", r.engine, weights_only=True)
    res["final"] = {"val": loop.run(score(r, "val", cfg.eval.n_val)),
                    "test": loop.run(score(r, "test", cfg.eval.n_test)),
                    "selected_step": r.best["step"], "selected_val_success": r.best["score"]}
    for h in r.harnesses:  # {harness: {split: {...}}} for the final policies
        res[h] = {split: res["final"][split][h] for split in ("val", "test")}
    write_json(r.run_dir / "eval.json", res)
    r.logger.log(eval_metrics(res["final"]["test"], "test"), step=cfg.train.steps)
    return res


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
