"""A stand-in for the part of verl's `verl.trainer.ppo.core_algos` that marl's engine=local path
imports (marl/advantage.py, marl/loss.py, marl/verl_plugin.py), for `local_check.py` on a machine
without verl (verl imports Ray, tensordict and more at its top; marl's trainer cannot be imported
without it). `install()` puts it in `sys.modules` only where `import verl` fails.

Each function computes what verl 0.9.1's does for the arguments marl passes it (GRPO's outcome
advantage, the vanilla dual-clip PPO loss with token-mean aggregation, the KL estimators);
anything else is refused. tests/benchmarks/test_local_check.py compares them with verl's own.
"""
from __future__ import annotations

import sys
import types
from collections import defaultdict
from enum import Enum

import torch

ADV_ESTIMATOR_REGISTRY: dict = {}


def register_adv_est(name_or_enum):
    def decorator(fn):
        ADV_ESTIMATOR_REGISTRY[name_or_enum.value if isinstance(name_or_enum, Enum) else name_or_enum] = fn
        return fn
    return decorator


def get_adv_estimator_fn(name_or_enum):
    name = name_or_enum.value if isinstance(name_or_enum, Enum) else name_or_enum
    if name not in ADV_ESTIMATOR_REGISTRY:
        raise ValueError(f"the verl stand-in has no advantage estimator {name!r}; "
                         f"it has {sorted(ADV_ESTIMATOR_REGISTRY)}")
    return ADV_ESTIMATOR_REGISTRY[name]


@register_adv_est("grpo")
def compute_grpo_outcome_advantage(token_level_rewards, response_mask, index, epsilon: float = 1e-6,
                                   norm_adv_by_std_in_grpo: bool = True, config=None):
    """(r - group mean) / (group std + eps) per sample (a group of one: mean 0, std 1), on every
    response position; verl's loop, so the floats are the same."""
    scores = token_level_rewards.sum(dim=-1)  # (B,)
    by_group = defaultdict(list)
    with torch.no_grad():
        for i in range(scores.shape[0]):
            by_group[index[i]].append(scores[i])
        mean, std = {}, {}
        for g, xs in by_group.items():
            stacked = torch.stack(xs)
            mean[g], std[g] = ((torch.tensor(0.0), torch.tensor(1.0)) if len(xs) == 1
                               else (torch.mean(stacked), torch.std(stacked)))
        for i in range(scores.shape[0]):
            g = index[i]
            scores[i] = (scores[i] - mean[g]) / (std[g] + epsilon) if norm_adv_by_std_in_grpo else scores[i] - mean[g]
        scores = scores.unsqueeze(-1) * response_mask  # (B, T)
    return scores, scores


def _masked_sum(values, mask):
    return (torch.where(mask.bool(), values, 0.0) * mask).sum()


def _masked_mean(values, mask):
    return _masked_sum(values, mask) / (mask.sum() + 1e-8)


def agg_loss(loss_mat, loss_mask, loss_agg_mode: str, dp_size: int = 1, batch_num_tokens=None, **_):
    if loss_agg_mode != "token-mean":
        raise ValueError(f"the verl stand-in aggregates token-mean only, not {loss_agg_mode!r}")
    n = loss_mask.sum() if batch_num_tokens is None else batch_num_tokens
    return _masked_sum(loss_mat, loss_mask) / n * dp_size


def compute_policy_loss_vanilla(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode: str = "token-mean",
                                config=None, rollout_is_weights=None):
    """PPO's clipped objective with dual clip (ratio bound clip_ratio_c for negative advantages)."""
    clip = config.clip_ratio
    low = config.clip_ratio_low if config.clip_ratio_low is not None else clip
    high = config.clip_ratio_high if config.clip_ratio_high is not None else clip
    clip_c = config.get("clip_ratio_c", 3.0)
    neg_kl = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    ratio = torch.exp(neg_kl)
    losses1 = -advantages * ratio
    losses2 = -advantages * torch.clamp(ratio, 1 - low, 1 + high)
    clipped1 = torch.maximum(losses1, losses2)
    losses3 = -advantages * clip_c
    clipped2 = torch.min(losses3, clipped1)
    losses = torch.where(advantages < 0, clipped2, clipped1)
    if rollout_is_weights is not None:
        losses = losses * rollout_is_weights
    loss = agg_loss(losses, response_mask, loss_agg_mode, **config.global_batch_info)
    return loss, {"actor/pg_clipfrac": _masked_mean(torch.gt(losses2, losses1).float(), response_mask).item(),
                  "actor/ppo_kl": _masked_mean(-neg_kl, response_mask).item(),
                  "actor/pg_clipfrac_lower": _masked_mean(torch.gt(clipped1, losses3) * (advantages < 0).float(),
                                                          response_mask).item()}


def get_policy_loss_fn(name: str):
    if name != "vanilla":
        raise ValueError(f"the verl stand-in has the 'vanilla' policy loss only, not {name!r}")
    return compute_policy_loss_vanilla


def kl_penalty(logprob, ref_logprob, kl_penalty: str):
    """verl's KL estimators; a trailing '+' takes k2's gradient by a straight-through estimator."""
    base = kl_penalty[:-1] if kl_penalty.endswith("+") else kl_penalty
    if base in ("kl", "k1"):
        forward = logprob - ref_logprob
    elif base == "abs":
        forward = (logprob - ref_logprob).abs()
    elif base in ("mse", "k2"):
        forward = 0.5 * (logprob - ref_logprob).square()
    elif base in ("low_var_kl", "k3"):
        kl = torch.clamp(ref_logprob - logprob, min=-20, max=20)
        forward = torch.clamp((torch.exp(kl) - kl - 1).contiguous(), min=-10, max=10)
    else:
        raise ValueError(f"the verl stand-in has no KL estimator {kl_penalty!r}")
    if not kl_penalty.endswith("+") or kl_penalty in ("mse", "k2"):
        return forward
    backward = 0.5 * (logprob - ref_logprob).square()
    return backward - backward.detach() + forward.detach()


def install() -> bool:
    """Put this module in place of `verl.trainer.ppo.core_algos` where verl cannot be imported.
    Returns whether it did (False: the real verl is used)."""
    try:
        import verl.trainer.ppo.core_algos  # noqa: F401
        return False
    except ImportError:
        pass
    verl, trainer, ppo = (types.ModuleType(n) for n in ("verl", "verl.trainer", "verl.trainer.ppo"))
    this = sys.modules[__name__]
    verl.trainer, trainer.ppo, ppo.core_algos = trainer, ppo, this
    sys.modules.update({"verl": verl, "verl.trainer": trainer, "verl.trainer.ppo": ppo,
                        "verl.trainer.ppo.core_algos": this})
    return True
