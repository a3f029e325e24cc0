"""A full training step, marl vs TRL's `GRPOTrainer`, on the same problems in the same order.

    pip install -e ".[bench]"      # TRL is a benchmark-only extra
    python benchmarks/trl_step.py [--steps 6] [--repeats 5] [hydra overrides]

Setting (both sides): the tiny model's warm start, single-agent single-turn Plan-Path prompts
(harness=single, max_turns=1), 16 problems x K=4 candidates = 64 samples per step, the same
max new tokens, sampling temperature 1, AdamW at the run's lr, one optimizer step per
training step, token-mean loss without KL, the same reward (the single harness's
`local + alpha * team` for the parsed moves), CPU, the same torch thread count, fp32 weights and
compute without gradient checkpointing. TRL's GRPOConfig defaults to bf16 autocast and gradient
checkpointing; both are turned off here, as marl runs neither. TRL's sampler does not shuffle:
its step s trains on the problems of marl's step s (read from marl's own traces), in marl's order.

Each side runs `--steps` steps in this process (marl: its own training loop, `marl.train.run`,
with evaluation off), the two alternating `--repeats` times (marl, TRL, marl, TRL, ...) so that a
slower spell of a shared machine falls on both; the first step of each run is discarded as
warm-up. Reported: the median step of each side over all repeats, as samples/s, their ratio, the
ratio of each repeat, and the load average around the measurement. TRL's step time covers its
generation, reward and update, as ours does.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build, config, first_policy, median, read_jsonl, save, saved_default, table, trained  # noqa: E402

SETTING = ["harness=single", "harness.max_turns=1", "algo.k=4", "train.problems_per_step=16",
           "eval.warm_start=false", "eval.n_val=1", "eval.n_test=1", "train.checkpoint_every=100000",
           "train.eval_every=100000", "train.schedule=constant", "train.warmup_steps=0"]


def marl_steps(overrides: list[str], steps: int) -> tuple[list[float], list[list[int]]]:
    """`steps` steps of marl's own training loop: each step's seconds and, per step, the train
    instance indices it rolled out, in their order (from the run's traces)."""
    with trained(overrides, steps) as d:
        times = [r["timing/step"] for r in read_jsonl(d / "metrics.jsonl") if "timing/step" in r]
        problems = []
        for f in sorted((d / "traces").glob("step_*.jsonl")):
            ids = [int(s["problem_id"].removeprefix("train:")) for s in read_jsonl(f)]
            problems.append(list(dict.fromkeys(ids)))  # first appearance order, each once
    return times, problems


def trl_steps(cfg, task, harness, model, tokenizer, problems: list[list[int]]) -> list[float]:
    """One step of TRL's GRPOTrainer per entry of `problems` (train instance indices), on a copy
    of `model` (the HF model of the local engine's policy); returns each step's seconds."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    B, k = cfg.train.problems_per_step, cfg.algo.k
    if any(len(p) != B for p in problems):
        raise ValueError(f"every step needs {B} problems (train.problems_per_step); got "
                         f"{[len(p) for p in problems]}")
    rows = [{"prompt": harness.prompt(harness.reset(task.instance("train", i)), "plan") + "\n", "idx": i}
            for step in problems for i in step]  # "\n" ends a prompt in the tiny format (marl.tiny.encode_pair)

    seen = []  # per reward call (one per step): the problems TRL rolled out, in order

    def reward(prompts, completions, idx, **_):
        seen.append(list(dict.fromkeys(idx)))
        out = []
        for text, i in zip(completions, idx):
            o = harness.act_sync(harness.reset(task.instance("train", i)), "plan", text)
            out.append(o.local + cfg.algo.alpha * o.team)
        return out

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], None

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t0)

    timer = Timer()
    with tempfile.TemporaryDirectory() as d:
        args = GRPOConfig(
            output_dir=d, use_cpu=True, max_steps=len(problems), per_device_train_batch_size=B * k,
            num_generations=k, max_completion_length=cfg.model.max_new_tokens, temperature=cfg.train.temperature,
            top_k=0, top_p=1.0, learning_rate=cfg.train.lr, lr_scheduler_type="constant", warmup_steps=0,
            adam_beta1=0.9, adam_beta2=0.99, weight_decay=cfg.train.weight_decay, max_grad_norm=cfg.update.grad_clip,
            beta=0.0, epsilon=cfg.update.clip, loss_type="dapo", num_iterations=1, steps_per_generation=1,
            gradient_accumulation_steps=1, logging_steps=1, report_to="none", save_strategy="no",
            dataloader_num_workers=0, seed=cfg.seed, disable_tqdm=True,
            # marl's terms: fp32 without checkpointing (GRPOConfig's defaults are bf16 autocast and
            # gradient checkpointing), and the problems in the dataset's order (default: shuffled)
            bf16=False, fp16=False, gradient_checkpointing=False, shuffle_dataset=False)
        trainer = GRPOTrainer(model=copy.deepcopy(model).train(), reward_funcs=reward, args=args,
                              train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                              callbacks=[timer])
        trainer.train()
    if seen != problems:
        raise RuntimeError(f"TRL rolled out {seen}, not marl's problems {problems}")
    return timer.times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=5)
    args, overrides = ap.parse_known_args()
    # The default warm start, loaded through `model.path`: the single-turn setting would
    # otherwise key a new build.
    path, _tmp = saved_default(overrides)
    run_overrides = SETTING + [path] + overrides
    cfg = config(run_overrides)
    built, harnesses = build(cfg)
    model, tokenizer = first_policy(built.engine).module, built.engine.tokenizer  # the warm start, for TRL
    samples = cfg.train.problems_per_step * cfg.algo.k
    load_before = os.getloadavg()
    ours, theirs, ratios, problems = [], [], [], None
    for _ in range(args.repeats):
        o, p = marl_steps(run_overrides, args.steps)
        if problems not in (None, p):
            raise RuntimeError("marl's runs of one seed rolled out different problems")
        problems = p
        t = trl_steps(cfg, built.task, harnesses["single"], model, tokenizer, problems)
        ours, theirs = ours + [o[1:]], theirs + [t[1:]]
        ratios.append(median(t[1:]) / median(o[1:]))
    load_after = os.getloadavg()
    m_ours, m_trl = median([x for o in ours for x in o]), median([x for t in theirs for x in t])
    rows = [["marl (local engine)", m_ours, samples / m_ours], ["TRL GRPOTrainer", m_trl, samples / m_trl],
            ["ratio marl/TRL", "", m_trl / m_ours]]
    print(f"{samples} samples per step ({cfg.train.problems_per_step} problems x K={cfg.algo.k}), {args.steps} "
          f"steps per run, first discarded, {args.repeats} runs of each side alternating; ratio per repeat: "
          + ", ".join(f"{r:.2f}" for r in ratios))
    print(f"load average (1, 5, 15 min) before: {load_before}, after: {load_after}")
    print(table(rows, ["trainer", "step s (median)", "samples/s"]))
    out = save("trl_step", {"steps": args.steps, "repeats": args.repeats, "overrides": overrides,
                            "samples_per_step": samples, "trl": {"bf16": False, "gradient_checkpointing": False,
                                                                 "shuffle_dataset": False},
                            "problems_per_step": problems, "load_before": load_before, "load_after": load_after,
                            "marl_step_s": ours, "trl_step_s": theirs, "ratio_per_repeat": ratios,
                            "ratio": m_trl / m_ours})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
