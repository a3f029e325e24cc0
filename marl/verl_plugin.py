"""Registers AT-GRPO in verl's advantage-estimator registry.

Loaded by every `import verl` through the `verl.plugins` entry point declared in setup.py (and
imported by `marl.advantage` directly, so it is registered even when
VERL_USE_EXTERNAL_PLUGINS=none). Only what verl lacks is registered: AT-GRPO is GRPO's
normalisation over a different index, one key per (problem, turn, role); the trajectory baseline
is verl's own `grpo` with index = problem.
"""
from __future__ import annotations

import numpy as np
import torch
from verl.trainer.ppo import core_algos

AT_GRPO = "at_grpo"
_SEP = "|"  # marl.grouping.SEP; not imported, so this module stays importable during `import verl`


def compute_at_grpo_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                              index: np.ndarray, epsilon: float = 1e-6,
                              norm_adv_by_std_in_grpo: bool = True, config=None, **kwargs):
    """AT-GRPO advantage: (r - mean) / (std + eps) within each (problem, turn, role) group.

    Args:
        token_level_rewards: (B, T) rewards; a sample's reward is their sum.
        response_mask: (B, T) 1 on response tokens.
        index: (B,) group keys "problem|t<turn>|role" (marl.grouping.at_grpo_key). A key with
            no turn and role (a bare problem id) is rejected: it would silently give
            trajectory-level groups.
    Returns:
        (advantages, returns), both (B, T), as every verl estimator.
    """
    for key in index:
        if str(key).count(_SEP) != 2:
            raise ValueError(f"at_grpo needs (problem, turn, role) group keys like 'p|t0|plan', got {key!r}")
    return core_algos.compute_grpo_outcome_advantage(
        token_level_rewards, response_mask, index, epsilon, norm_adv_by_std_in_grpo, config)


if AT_GRPO not in core_algos.ADV_ESTIMATOR_REGISTRY:
    core_algos.register_adv_est(AT_GRPO)(compute_at_grpo_advantage)
