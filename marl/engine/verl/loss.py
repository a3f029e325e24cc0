"""verl's PPO loss, with its clip fractions and KL estimate weighted by response tokens.

verl 0.9.1's `ppo_loss` (workers/utils/losses.py) reports `actor/pg_clipfrac`, `actor/ppo_kl` and
`actor/pg_clipfrac_lower` as each micro-batch's masked mean (0 where it holds no response token)
with MEAN aggregation, and the worker averages them over data-parallel ranks, then over
micro-batches (`Metric.aggregate_dp`): a micro-batch of 3 tokens weighs as much as one of 3000,
and a rank holding only padding rows pulls the mean towards 0. Its loss terms (`actor/pg_loss`,
`kl_loss`, `actor/entropy_loss`) are already shares of the mini-batch's token mean (SUM).

`ppo_loss` here reports those three metrics the same way: this micro-batch's masked sum over the
mini-batch's response tokens on all ranks (`batch_num_tokens`, times `dp_size`, as verl's
`agg_loss` does), with SUM aggregation, so verl's own reduction gives the mini-batch's token mean.
The loss and its gradient are verl's, unchanged. Installed on the worker group with
`wg.set_loss_fn(functools.partial(ppo_loss, config=<the actor's ActorConfig>))`.
"""
from __future__ import annotations

MEAN_METRICS = ("actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower")


def ppo_loss(config, model_output, data, dp_group=None):
    """verl's `ppo_loss(config, model_output, data, dp_group)` -> (loss, metrics), with
    `MEAN_METRICS` made token-weighted shares (module docstring)."""
    from verl.utils.metric import AggregationType, Metric
    from verl.workers.utils.losses import ppo_loss as verls_ppo_loss

    loss, metrics = verls_ppo_loss(config, model_output, data, dp_group)
    # the tokens verl's masked means divide by: the micro-batch's response (= loss) mask
    n_tokens = float(data["loss_mask"].sum())
    share = n_tokens / max(float(data["batch_num_tokens"]), 1.0) * data["dp_size"]
    for key in MEAN_METRICS:
        if key in metrics:
            # masked mean = sum / (n_tokens + 1e-8): times n_tokens it is the sum (0 without tokens)
            metrics[key] = Metric(AggregationType.SUM, metrics[key].aggregate() * share)
    return loss, metrics
