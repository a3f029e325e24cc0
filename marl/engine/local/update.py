"""The local engine's PPO update of one policy (full model or LoRA adapter, `policies.py`)."""
from __future__ import annotations

import random
import time
from collections import defaultdict

import torch
import torch.nn.functional as F

from marl.engine.local.logprobs import response_logprobs
from marl.engine.spec import UpdateSpec
from marl.types import TrainSample


def chunks(xs: list, n: int) -> list[list]:
    return [xs[i:i + n] for i in range(0, len(xs), n)]


def update_policy(policy, batch: list[TrainSample], spec: UpdateSpec, rng: random.Random) -> dict[str, float]:
    """PPO epochs over `batch` (all from this policy) in mini-batches (one optimizer step each)
    split into micro-batches (gradient accumulation; token-mean over the whole mini-batch). The
    mini-batch order is drawn from `rng` (the trainer's: a resumed run draws the same).

    Old log-probs are the pre-update weights' at each sample's temperature, so the first
    mini-batch's ratio is 1 and later ones measure how far the update has moved. When the update
    is on-policy (one epoch, every sample in one mini-batch), no optimizer step comes
    before any sample's loss, so those log-probs are exactly what the training forward computes:
    it reuses them, detached, instead of a second no-grad pass over every sample (as TRL and verl
    do). `old_logprob=recompute` always runs that pass (the reference for the tests)."""
    from marl.loss import ppo_loss  # verl import cost paid only when training

    model, pad = policy.module, policy.pad_id
    mb, micro = spec.mini_batch, spec.micro_batch
    reuse = spec.old_logprob == "auto" and spec.ppo_epochs == 1 and len(batch) <= mb
    policy.activate()
    t0 = time.perf_counter()
    with torch.no_grad(), policy.reference() as ref_model:
        old, ref = {}, {}
        for part in chunks(batch, micro):
            if reuse and ref_model is None:
                break
            args = ([x.sample.prompt_ids for x in part], [x.sample.response_ids for x in part],
                    [x.sample.temperature for x in part], pad)
            rlp = response_logprobs(ref_model, *args)[0] if ref_model is not None else None
            for j, x in enumerate(part):
                if rlp is not None:
                    ref[id(x)] = rlp[j, :len(x.sample.response_ids)]
    with torch.no_grad():  # after the reference: a LoRA reference is the same module, adapters off
        if not reuse:
            for part in chunks(batch, micro):
                lp = response_logprobs(model, [x.sample.prompt_ids for x in part], [x.sample.response_ids for x in part],
                                       [x.sample.temperature for x in part], pad)[0]
                for j, x in enumerate(part):
                    old[id(x)] = lp[j, :len(x.sample.response_ids)]
    t_old = time.perf_counter() - t0
    model.train()
    metrics: dict[str, list[float]] = defaultdict(list)
    order = list(batch)
    n_mini = 0
    for _ in range(spec.ppo_epochs):
        rng.shuffle(order)
        for mini in chunks(order, mb):
            n_tokens = sum(len(x.sample.response_ids) for x in mini)
            n_mini += 1
            policy.optimizer.zero_grad(set_to_none=True)
            # Group members side by side, so a micro-batch runs their shared prompt once (the
            # gradient of a mini-batch does not depend on the order within it).
            for part in chunks(sorted(mini, key=lambda x: x.sample.group_id), micro):
                lp, mask, ent = response_logprobs(
                    model, [x.sample.prompt_ids for x in part], [x.sample.response_ids for x in part],
                    [x.sample.temperature for x in part], pad, with_entropy=spec.entropy_coef > 0)
                T = lp.shape[1]
                old_lp = (lp.detach() if reuse else
                          torch.stack([F.pad(old[id(x)], (0, T - len(x.sample.response_ids))) for x in part]))  # (B, T)
                ref_lp = (torch.stack([F.pad(ref[id(x)], (0, T - len(x.sample.response_ids))) for x in part])
                          if ref else None)  # (B, T)
                adv = torch.tensor([x.advantage for x in part], dtype=lp.dtype, device=lp.device)  # (B,)
                loss, m = ppo_loss(lp, old_lp.to(lp.device), adv, mask, n_tokens, clip=spec.clip,
                                   entropy=ent, entropy_coef=spec.entropy_coef,
                                   ref_logprob=None if ref_lp is None else ref_lp.to(lp.device),
                                   kl_coef=spec.kl_coef, kl_type=spec.kl_type)
                loss.backward()
                for key, v in m.items():
                    metrics[key].append(v)
            gn = torch.nn.utils.clip_grad_norm_(policy.parameters, spec.grad_clip)
            metrics["train/grad_norm"].append(float(gn))
            policy.optimizer.step()
    policy.scheduler.step()
    model.eval()
    # the loss metrics are micro-batch shares that add up to each mini-batch's token mean; the
    # grad norm is one value per mini-batch: every metric is a mean over mini-batches
    out = {k: sum(v) / max(n_mini, 1) for k, v in metrics.items()}
    out["train/lr"] = policy.scheduler.get_last_lr()[0]
    out["timing/old_logprob"] = t_old  # the separate pass for pre-update (and reference) log-probs
    return out
