"""Train a team of LLM agents with AT-GRPO (or the trajectory-level GRPO baseline).

    python -m marl.train +exp=planning [seed=1 train.steps=50 harness=single policy=per_role ...]

`run` reads top to bottom: build everything, resume or evaluate the warm start, then loop
rollout -> group -> advantage -> update -> sync -> evaluate -> log -> checkpoint, and finally
test the checkpoint selected on validation. `main` reads Hydra once into typed settings
(`marl.config`); the algorithm's own steps are a strategy (`marl.algos`); the model runtime is
the engine's (`marl.engine`). Shapes: B samples in a step, K candidates per group.
"""
from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm import tqdm

from marl import algos, checkpoint, runs
from marl.advantage import group_advantages
from marl.algos import Algo
from marl.build import BuiltRun, build_run
from marl.config import RunSettings, run_settings, save_run_settings
from marl.episodes import play, summarize
from marl.io import set_threads, write_json
from marl.logger import Logger, make_logger
from marl.metrics import eval_metrics, memory_mb, merge_updates, rollout_metrics
from marl.rollout import RolloutSpec
from marl.types import TrainSample
from roles import Harness, make_harness


def run(s: RunSettings, run_dir: Path, hydra_files: runs.HydraFiles | None = None) -> dict:
    """Train in `run_dir` (a resume: in the resumed run's own directory). `hydra_files`: the
    `.hydra/` record a fresh start from the command line writes once its checks pass."""
    begin = runs.check_start(s, run_dir)  # a refused start: nothing built, nothing written
    for note in begin.notes:
        tqdm.write(note)
    run_dir = begin.run_dir
    r = build(s, run_dir)                                                          # build
    if hydra_files and begin.checkpoint is None:
        hydra_files.write(run_dir)  # a resume keeps the record of the command that started the run
    with closing(r.engine), asyncio.Runner() as loop:  # one event loop; the engine closed however the run ends
        start = resume_or_warm_start(r, loop, begin.checkpoint)
        for step in tqdm(range(start, s.train.steps), initial=start, total=s.train.steps, desc="train"):
            t = {"start": time.perf_counter()}
            r.engine.reset_stats()
            samples, episodes = loop.run(collect(r, step))                         # rollout
            t["rollout"] = time.perf_counter()
            group_m = r.algo.check(samples, s.algo.k)                              # group
            batch, adv_m = advantages(r, samples)                                  # advantage
            t["advantage"] = time.perf_counter()
            upd_m = update(r, batch)                                               # update
            t["update"] = time.perf_counter()
            r.engine.sync_weights()                                                # sync
            t["sync"] = time.perf_counter()
            metrics = {**group_m, **adv_m, **upd_m, **rollout_metrics(samples, episodes, r.harness.role_names),
                       **step_timings(r, t), **memory_mb()}
            write_traces(r, step, batch, metrics)
            done = step + 1
            if done % s.train.eval_every == 0 or done == s.train.steps:           # evaluate
                validate_and_select(r, loop, done, metrics)
            metrics["timing/step"] = time.perf_counter() - t["start"]
            r.logger.log(metrics, step=done)                                       # log
            if done % s.train.checkpoint_every == 0 or done == s.train.steps:      # checkpoint
                checkpoint.save(r.ckpt_dir, done, r.engine, trainer_state(r))
        results = final_test(r, loop)
    r.logger.finish()
    print_summary(results, s, run_dir)
    return results


# ---- build and resume ------------------------------------------------------------------------

@dataclass(frozen=True)
class Best:
    """The checkpoint selected so far: the highest validation success and the step that had it."""

    score: float = -1.0
    step: int = 0


@dataclass
class Run:
    """Everything one training run holds; the helpers below read and advance it."""

    s: RunSettings  # the run's settings (marl.config)
    run_dir: Path
    built: BuiltRun
    harnesses: dict[str, Harness]  # every evaluation harness by name; the training harness among them
    logger: Logger
    algo: Algo
    rollout_spec: RolloutSpec
    rng: random.Random
    results: dict = field(default_factory=dict)
    best: Best = field(default_factory=Best)

    @property
    def engine(self):
        return self.built.engine

    @property
    def harness(self) -> Harness:
        return self.harnesses[self.s.task.harness]

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"


def build(s: RunSettings, run_dir: Path) -> Run:
    """Everything a run holds, its settings written into `run_dir` (runs.check_start passed)."""
    set_threads(s.threads)
    built = build_run(s, log=tqdm.write)
    # Seeded after the build: building the tiny model draws from the global RNGs and loading it
    # from the cache does not, and a run must not depend on whether its model was cached.
    random.seed(s.seed)
    np.random.seed(s.seed)
    torch.manual_seed(s.seed)
    names = list(dict.fromkeys([s.task.harness, *s.eval.harnesses]))
    (run_dir / "traces").mkdir(parents=True, exist_ok=True)
    save_run_settings(s, run_dir)  # what marl.evaluate rebuilds the run from
    a = s.algo
    return Run(s, run_dir, built, {n: make_harness(built.task, n, **built.h_kw) for n in names},
               make_logger(s.logger, run_dir, s.config), algos.get(a.name),
               RolloutSpec(a.k, s.train.temperature, a.alpha, a.select), random.Random(s.seed))


def resume_or_warm_start(r: Run, loop: asyncio.Runner, path: Path | None) -> int:
    """The first step to train: after the checkpoint `path` of a resume, else 0. A fresh start
    evaluates the warm start (when eval.warm_start: the first candidate for selection, RL must
    beat it on validation) and saves it as the first checkpoint, so a run killed at any step
    resumes."""
    s = r.s
    if path is not None:
        state = checkpoint.load(path, r.engine)
        r.best, r.rng = Best(**state["best"]), state["trainer_rng"]
        eval_json = r.run_dir / "eval.json"
        r.results = json.loads(eval_json.read_text()) if eval_json.exists() else {}
        r.logger.rewind(state["step"])  # steps logged after that checkpoint are run (and logged) again
        tqdm.write(f"resumed from {path} at step {state['step']}")
        return state["step"]
    r.logger.rewind(-1)  # a run killed before its first checkpoint left rows that this one logs again
    if s.eval.warm_start:
        t0 = time.perf_counter()
        r.results["warm_start"] = {"val": loop.run(score(r, "val", s.eval.n_val)),
                                   "test": loop.run(score(r, "test", s.eval.n_test))}
        r.logger.log({**eval_metrics(r.results["warm_start"]["val"], "val"),
                      "timing/eval": time.perf_counter() - t0}, step=0)
        write_json(r.run_dir / "eval.json", r.results)
        r.best = Best(r.results["warm_start"]["val"][s.task.harness]["success"], 0)
    checkpoint.save(r.ckpt_dir, 0, r.engine, trainer_state(r), best=s.eval.warm_start, latest=True)
    return 0


def trainer_state(r: Run) -> dict:
    """The trainer's part of a checkpoint; `best` a plain dict, as in checkpoints saved before `Best`."""
    return {"best": asdict(r.best), "trainer_rng": r.rng}


# ---- one step ----------------------------------------------------------------------------------

async def collect(r: Run, step: int):
    """Roll out one step's problems. Returns (samples, grouped as the algorithm groups them;
    episodes). Problem ids are unique per run: the train instance index, walked in order from a
    seed-dependent offset. The algorithm makes each problem's jobs (marl.algos)."""
    h, B = r.harness, r.s.train.problems_per_step
    start = r.s.seed * 1_000_000 + step * B
    rngs = [random.Random(r.rng.random()) for _ in range(B)]
    jobs = []
    for b in range(B):
        idx = start + b
        inst, pid = h.task.instance("train", idx), f"train:{idx}"
        jobs += r.algo.jobs(h, inst, pid, r.built.routing(h.role_names), r.rollout_spec, rngs[b])
    episodes = await r.engine.gather(jobs)
    return r.algo.regroup(episodes), episodes


def advantages(r: Run, samples) -> tuple[list[TrainSample], dict]:
    a = r.s.algo
    rewards = torch.tensor([s.reward for s in samples])  # (B,)
    adv, m = group_advantages(rewards, [s.group_id for s in samples], r.algo.estimator, a.eps, a.norm_by_std)  # (B,)
    return [TrainSample(s, x) for s, x in zip(samples, adv.tolist())], m


def update(r: Run, batch: list[TrainSample]) -> dict:
    """One update per policy, on the samples it generated."""
    by_policy = defaultdict(list)
    for x in batch:
        by_policy[x.sample.policy].append(x)
    per = {pid: r.engine.update(pid, xs, r.s.update, r.rng) for pid, xs in by_policy.items()}
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
    e = r.s.eval
    samples, temperature = (e.val_samples, e.val_temperature) if split == "val" else (1, e.temperature)
    out = {}
    for name, h in r.harnesses.items():
        eps = []  # samples x n, flat
        for s in range(samples):
            eps += await play(h, split, n, r.engine, r.built.routing(h.role_names), temperature=temperature,
                              alpha=r.s.algo.alpha, seed=r.s.seed + 1000 * s)
        out[name] = summarize(eps)
    return out


def validate_and_select(r: Run, loop: asyncio.Runner, done: int, metrics: dict) -> None:
    """Validation after `done` steps; a new best (on validation only, never test) is saved."""
    t0 = time.perf_counter()
    val = loop.run(score(r, "val", r.s.eval.n_val))
    metrics.update(eval_metrics(val, "val"))
    metrics["timing/eval"] = time.perf_counter() - t0
    if val[r.s.task.harness]["success"] > r.best.score:
        r.best = Best(val[r.s.task.harness]["success"], done)
        checkpoint.save(r.ckpt_dir, done, r.engine, trainer_state(r), best=True)


def final_test(r: Run, loop: asyncio.Runner) -> dict:
    """Validation and test of the checkpoint selected on validation, into eval.json."""
    s, res = r.s, r.results
    if (r.ckpt_dir / "best").exists():
        checkpoint.load(r.ckpt_dir / "best", r.engine, weights_only=True)
    res["final"] = {"val": loop.run(score(r, "val", s.eval.n_val)),
                    "test": loop.run(score(r, "test", s.eval.n_test)),
                    "selected_step": r.best.step, "selected_val_success": r.best.score}
    for h in r.harnesses:  # {harness: {split: {...}}} for the final policies
        res[h] = {split: res["final"][split][h] for split in ("val", "test")}
    write_json(r.run_dir / "eval.json", res)
    r.logger.log(eval_metrics(res["final"]["test"], "test"), step=s.train.steps)
    return res


def print_summary(results: dict, s: RunSettings, run_dir: Path) -> None:
    rows = [f"\n{'harness':<8} {'split':<5} {'warm start':>10} {'after RL':>9}"]
    for h in s.eval.harnesses:
        for split in ("val", "test"):
            ws = results.get("warm_start", {}).get(split, {}).get(h, {}).get("success")
            ws = "-" if ws is None else f"{ws:.1%}"  # eval.warm_start=false: not evaluated
            rows.append(f"{h:<8} {split:<5} {ws:>10} {results[h][split]['success']:>9.1%}")
    rows.append(f"trained harness={s.task.harness} policy={s.policy.name} algo={s.algo.name}; "
                f"selected step {results['final']['selected_step']} on validation; outputs in {run_dir}")
    print("\n".join(rows), flush=True)


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    made = Path(HydraConfig.get().runtime.output_dir)
    try:
        run(run_settings(cfg), made, runs.HydraFiles.current(cfg))
    finally:  # a refused start, or a resume continuing in its own directory: no empty directory left
        runs.leave_no_trace(made)


if __name__ == "__main__":
    main()
