"""Registers AT-GRPO in verl's advantage-estimator registry.

Loaded by every `import verl` through the `verl.plugins` entry point declared in setup.py (and
imported by `marl.advantage` directly, so it is registered even when
VERL_USE_EXTERNAL_PLUGINS=none). Only what verl lacks is registered: AT-GRPO is GRPO's
normalisation over a different index, one key per (problem, turn, role); the trajectory baseline
is verl's own `grpo` with index = problem.

verl's `compute_advantage` calls a registered estimator with `index = non_tensor_batch["uid"]`
and `config` (its AlgoConfig) only, so the settings are read from `config` when it is given:
`norm_adv_by_std_in_grpo`, and `epsilon` where the config carries one. Called directly (as
`marl.advantage` does), the keyword arguments hold them.
"""
from __future__ import annotations

import numpy as np
import torch
from verl.trainer.ppo import core_algos

AT_GRPO = "at_grpo"
_SEP = "|"  # marl.grouping.SEP; not imported, so this module stays importable during `import verl`


def _setting(config, name: str, default):
    if config is None:
        return default
    value = config.get(name, None) if hasattr(config, "get") else getattr(config, name, None)
    return default if value is None else value


def zero_flat_groups(advantages: torch.Tensor, scores: torch.Tensor, index) -> torch.Tensor:
    """Exactly zero advantage for every row of a group whose scores are all equal.

    verl's float32 group mean of equal scores can be off by an ulp, which / (0 + eps) turns into
    an advantage of order 0.1 with one sign for the whole group.
    Args:
        advantages: (B, ...) advantages; scores: (B,) the scores they were computed from;
        index: (B,) group keys.
    """
    lo: dict = {}
    hi: dict = {}
    for g, s in zip(index, scores.tolist()):
        lo[g] = min(lo.get(g, s), s)
        hi[g] = max(hi.get(g, s), s)
    flat = torch.tensor([lo[g] == hi[g] for g in index], dtype=torch.bool)  # (B,)
    return advantages.masked_fill(flat.view(-1, *[1] * (advantages.dim() - 1)), 0.0)


def compute_at_grpo_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                              index: np.ndarray, epsilon: float = 1e-6,
                              norm_adv_by_std_in_grpo: bool = True, config=None, **kwargs):
    """AT-GRPO advantage: (r - mean) / (std + eps) within each (problem, turn, role) group, and
    exactly 0 in a group whose rewards are all equal.

    Args:
        token_level_rewards: (B, T) rewards; a sample's reward is their sum.
        response_mask: (B, T) 1 on response tokens.
        index: (B,) group keys "problem|t<turn>|role" (marl.grouping.at_grpo_key). A key with
            no turn and role (a bare problem id) is rejected: it would silently give
            trajectory-level groups.
        epsilon, norm_adv_by_std_in_grpo: used when `config` does not set them.
    Returns:
        (advantages, returns), both (B, T), as every verl estimator.
    """
    for key in index:
        if str(key).count(_SEP) != 2:
            raise ValueError(f"at_grpo needs (problem, turn, role) group keys like 'p|t0|plan', got {key!r}")
    epsilon = _setting(config, "epsilon", epsilon)
    by_std = _setting(config, "norm_adv_by_std_in_grpo", norm_adv_by_std_in_grpo)
    adv, _ = core_algos.compute_grpo_outcome_advantage(token_level_rewards, response_mask, index, epsilon, by_std)
    adv = zero_flat_groups(adv, token_level_rewards.sum(dim=-1), index)  # (B, T)
    return adv, adv  # outcome-only: returns are the advantages, as in verl's grpo


if AT_GRPO not in core_algos.ADV_ESTIMATOR_REGISTRY:
    core_algos.register_adv_est(AT_GRPO)(compute_at_grpo_advantage)
