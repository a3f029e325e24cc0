"""Advantages from scalar rewards and explicit group keys, through verl's estimator registry.

Pure: tensors and lists in, `(value, metrics)` out.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from verl.trainer.ppo import core_algos

from marl import verl_plugin  # noqa: F401  (registers "at_grpo")

ESTIMATORS = {"at_grpo": verl_plugin.AT_GRPO, "grpo": "grpo"}


def group_advantages(rewards: torch.Tensor, group_ids: list[str], estimator: str,
                     eps: float = 1e-6, norm_by_std: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """Args:
        rewards: (B,) one scalar reward per sample.
        group_ids: B group keys; samples with equal keys are normalised together.
        estimator: "at_grpo" (keys per (problem, turn, role)) or "grpo" (keys per problem).
    Returns:
        advantages (B,) and metrics: adv/zero_std_frac (share of groups whose rewards are all
        equal, which contribute no gradient), adv/mean, adv/abs_mean, adv/n_groups.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {estimator!r}; allowed: {', '.join(ESTIMATORS)}")
    if rewards.dim() != 1 or rewards.shape[0] != len(group_ids):
        raise ValueError(f"rewards must be (B,) with B = len(group_ids); got {tuple(rewards.shape)} and {len(group_ids)}")
    fn = core_algos.get_adv_estimator_fn(ESTIMATORS[estimator])
    token_rewards = rewards.float().unsqueeze(-1)  # (B, 1): the whole reward on one position
    mask = torch.ones_like(token_rewards)  # (B, 1)
    adv, _ = fn(token_level_rewards=token_rewards, response_mask=mask,
                index=np.array(group_ids, dtype=object), epsilon=eps, norm_adv_by_std_in_grpo=norm_by_std)
    scores = token_rewards.squeeze(-1)  # (B,) the float32 values normalised
    adv = verl_plugin.zero_flat_groups(adv.squeeze(-1), scores, group_ids)  # (B,); verl's grpo lacks the fix
    by_group: dict[str, list[float]] = defaultdict(list)
    for g, r in zip(group_ids, scores.tolist()):
        by_group[g].append(r)
    zero = sum(max(rs) == min(rs) for rs in by_group.values())
    metrics = {
        "adv/zero_std_frac": zero / max(len(by_group), 1),
        "adv/n_groups": float(len(by_group)),
        "adv/mean": adv.mean().item() if len(adv) else 0.0,
        "adv/abs_mean": adv.abs().mean().item() if len(adv) else 0.0,
    }
    return adv, metrics
