"""PPO clip loss with token-mean aggregation, optional KL and entropy terms, from verl's core_algos.

Pure: tensors and floats in, `(loss, metrics)` out. The loss of a micro-batch is normalised by
the token count of the whole mini-batch (`n_tokens`), so summing micro-batch gradients gives
the same update whatever the micro-batch split.
"""
from __future__ import annotations

import torch
from omegaconf import OmegaConf
from verl.trainer.ppo import core_algos


def ppo_loss(logprob: torch.Tensor, old_logprob: torch.Tensor, advantages: torch.Tensor,
             mask: torch.Tensor, n_tokens: int, clip: float = 0.2,
             entropy: torch.Tensor | None = None, entropy_coef: float = 0.0,
             ref_logprob: torch.Tensor | None = None, kl_coef: float = 0.0,
             kl_type: str = "low_var_kl") -> tuple[torch.Tensor, dict[str, float]]:
    """Args:
        logprob, old_logprob: (B, T) log p of the response tokens, current and behaviour policy.
        advantages: (B,) one advantage per sample, broadcast over its tokens.
        mask: (B, T) 1 on response tokens.
        n_tokens: response tokens in the whole mini-batch this micro-batch belongs to.
        entropy: (B, T) token entropies, needed when entropy_coef > 0 (bonus: subtracted).
        ref_logprob: (B, T) reference policy, needed when kl_coef > 0.
    Returns:
        loss (scalar, this micro-batch's share of the mini-batch loss) and metrics, each this
        micro-batch's share of its mini-batch token mean (summed over micro-batches, the mean).
    """
    adv = advantages.unsqueeze(-1).expand_as(logprob) * mask  # (B, T)
    cfg = OmegaConf.create({"clip_ratio": clip, "clip_ratio_low": None, "clip_ratio_high": None,
                            "clip_ratio_c": 3.0,
                            "global_batch_info": {"dp_size": 1, "batch_num_tokens": n_tokens}})
    pg_fn = core_algos.get_policy_loss_fn("vanilla")
    pg_loss, pg_metrics = pg_fn(old_log_prob=old_logprob, log_prob=logprob, advantages=adv,
                                response_mask=mask, loss_agg_mode="token-mean", config=cfg)
    loss = pg_loss
    share = float(mask.sum()) / n_tokens  # verl's clip fraction and KL are this micro-batch's token means
    metrics = {"train/pg_loss": pg_loss.item(), "train/clipfrac": pg_metrics["actor/pg_clipfrac"] * share,
               "train/ppo_kl": pg_metrics["actor/ppo_kl"] * share}
    if entropy_coef > 0:
        if entropy is None:
            raise ValueError("entropy_coef > 0 needs the token entropies")
        ent = core_algos.agg_loss(entropy, mask, "token-mean", batch_num_tokens=n_tokens)
        loss = loss - entropy_coef * ent
        metrics["train/entropy"] = ent.item()
    if kl_coef > 0:
        if ref_logprob is None:
            raise ValueError("kl_coef > 0 needs reference log-probs")
        kl = core_algos.kl_penalty(logprob, ref_logprob, kl_type)  # (B, T)
        kl_loss = core_algos.agg_loss(kl, mask, "token-mean", batch_num_tokens=n_tokens)
        loss = loss + kl_coef * kl_loss
        metrics["train/kl"] = kl_loss.item()
    return loss, metrics
