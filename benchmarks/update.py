"""The update's forward+backward: every prompt+response in full vs each distinct prompt once
with the K candidates' responses packed after it (`response_logprobs(share_prefix=...)`).

    python benchmarks/update.py [--reps 5] [hydra overrides, e.g. algo.k=8]

Samples are one real training step's (16 problems of the team, K candidates per group, rolled
out with the warm start: `marl.train.collect` on the trainer's own `Run`). Each repetition runs
forward + backward over all of them in micro-batches of `train.micro_batch`, once per method,
interleaved; medians are reported.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import config, first_policy, median, save, table, train_run  # noqa: E402

from marl.engine.local.logprobs import response_logprobs  # noqa: E402
from marl.train import collect  # noqa: E402


def fwd_bwd(policy, samples, micro: int, share: bool) -> float:
    t0 = time.perf_counter()
    policy.module.zero_grad(set_to_none=True)
    for i in range(0, len(samples), micro):
        part = sorted(samples, key=lambda s: s.group_id)[i:i + micro]
        lp, mask, _ = response_logprobs(policy.module, [s.prompt_ids for s in part], [s.response_ids for s in part],
                                        [s.temperature for s in part], policy.pad_id, share_prefix=share)
        ((lp * mask).sum() / mask.sum()).backward()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    args, overrides = ap.parse_known_args()
    cfg = config(overrides)
    with train_run(cfg) as r:
        samples, _ = asyncio.run(collect(r, 0))  # step 0's rollouts, as the run's first step
        policy = first_policy(r.engine)
        policy.activate()  # as update_policy does (a LoRA policy's adapter)
        policy.module.train()
        times = {"full": [], "shared_prefix": []}
        for _ in range(args.reps):
            times["full"].append(fwd_bwd(policy, samples, cfg.update.micro_batch, share=False))
            times["shared_prefix"].append(fwd_bwd(policy, samples, cfg.update.micro_batch, share=True))
    med = {k: median(v) for k, v in times.items()}
    n_prompts = len({tuple(s.prompt_ids) for s in samples})
    print(f"{len(samples)} samples, {n_prompts} distinct prompts, K={cfg.algo.k}, reps={args.reps}")
    print(table([["full sequences", med["full"]], ["shared prefix", med["shared_prefix"]],
                 ["ratio full/shared", med["full"] / med["shared_prefix"]]], ["forward+backward", "seconds (median)"]))
    print(f"wrote {save('update', {'overrides': overrides, 'samples': len(samples), 'prompts': n_prompts, 'seconds': times, 'ratio': med['full'] / med['shared_prefix']})}")


if __name__ == "__main__":
    main()
