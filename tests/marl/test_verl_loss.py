"""marl.engine.verl.loss: verl's PPO loss with the clip fraction and KL estimate weighted by
response tokens. The micro-batches of two data-parallel ranks (one holding only padding rows in
its second micro-batch) go through the loss and through verl's own metric reduction
(`append_to_dict` per rank, `Metric.aggregate_dp` over ranks), as `update_actor` runs them."""
from __future__ import annotations

import pytest
import torch
from verl.utils import tensordict_utils as tu
from verl.utils.metric import Metric
from verl.utils.py_functional import append_to_dict

from marl.engine import EngineSpec, OptimSpec, UpdateSpec
from marl.engine.verl.batch import to_batch, worker_input
from marl.engine.verl.config import verl_config
from marl.engine.verl.loss import ppo_loss
from marl.engine.verl.settings import VerlSettings
from test_verl_batch import PAD, samples

CLIP = 0.2


def actor_config():
    from verl.utils.config import omega_conf_to_dataclass

    u = UpdateSpec(clip=CLIP, ppo_epochs=1, mini_batch=8, micro_batch=8, grad_clip=1.0, kl_coef=0.0)
    spec = EngineSpec(name="verl", kind="shared", policy_ids=("shared",), model_path="unused", dtype="float32",
                      device="cuda", max_new_tokens=64, max_batch=0,
                      optim=OptimSpec(lr=1e-6, weight_decay=0.0, schedule="constant", warmup_steps=0, total_steps=1),
                      reference=False, seed=0, lora=None, update=u, settings=VerlSettings(prompt_length=64,
                                                                                         max_tokens_per_gpu=128))
    return omega_conf_to_dataclass(verl_config(spec, spec.settings, 1, 2).actor_rollout_ref.actor)


def micro_batch(batch, noise):
    """verl's training input for `batch` (old log-probs = the rollout's) and the model output a
    forward would give: log-probs `noise` away from the old ones, in verl's no-padding layout
    (a row's response log-probs sit one position left of its response tokens)."""
    b = batch.batch
    b["old_log_probs"] = b["rollout_log_probs"]
    new = b["old_log_probs"] + noise[:, :b["responses"].shape[1]]  # (B, R)
    td = worker_input(batch, temperature=1.0)
    rows = []
    for i, ids in enumerate(td["input_ids"].unbind()):
        n_resp = int(b["attention_mask"][i, b["prompts"].shape[1]:].sum())
        row = torch.zeros(len(ids))
        row[len(ids) - n_resp - 1:len(ids) - 1] = new[i, :n_resp]
        rows.append(row)
    out = {"log_probs": torch.nested.as_nested_tensor(rows, layout=torch.jagged)}
    return td, out, new


def reduce_like_verl(per_rank_metrics: list[list[dict]]) -> dict[str, float]:
    """forward_backward_batch -> _postprocess_output -> train_mini_batch, for one mini-batch."""
    gathered: dict[str, list] = {}
    for micro in per_rank_metrics:
        rank: dict = {}
        for m in micro:
            append_to_dict(rank, m)
        for k, v in rank.items():
            gathered.setdefault(k, []).append(v)
    return {k: Metric.aggregate_dp(v) for k, v in gathered.items()}


def test_clipfrac_and_kl_are_the_token_mean_of_the_mini_batch_over_ranks_and_micro_batches():
    xs = samples(6, seed=5)
    full = to_batch(xs[5:], 2, PAD)  # one real row, one padding row
    # rank 0: two micro-batches of real rows; rank 1: one with a real row, one of padding only
    parts = [[to_batch(xs[:3], 1, PAD), to_batch(xs[3:5], 1, PAD)], [full[0:1], full[1:2]]]
    n_tokens = sum(len(x.sample.response_ids) for x in xs)
    g = torch.Generator().manual_seed(0)
    config = actor_config()
    plain, weighted, clipped, kl, losses = [], [], 0.0, 0.0, []
    for rank in parts:
        plain.append([]), weighted.append([])
        for batch in rank:
            noise = torch.randn(len(batch), 16, generator=g) * 0.5  # ratios well outside 1 +- CLIP
            td, out, new = micro_batch(batch, noise)
            tu.assign_non_tensor(td, batch_num_tokens=n_tokens, dp_size=2, global_batch_size=None)
            loss_a, m_a = ppo_loss(config, out, td)
            loss_b, m_b = _verls(config, out, td)
            assert loss_a.item() == loss_b.item()  # the loss (and its gradient) stays verl's
            weighted[-1].append(m_a), plain[-1].append(m_b)
            b = batch.batch
            mask, adv, old = b["response_mask"].bool(), b["advantages"], b["old_log_probs"]
            ratio = torch.exp(new - old)
            clipped += float(((-adv * ratio.clamp(1 - CLIP, 1 + CLIP)) > (-adv * ratio))[mask].sum())
            kl += float((old - new)[mask].sum())
    want_clip, want_kl = clipped / n_tokens, kl / n_tokens
    got, verls = reduce_like_verl(weighted), reduce_like_verl(plain)
    assert 0 < want_clip < 1
    assert got["actor/pg_clipfrac"] == pytest.approx(want_clip, rel=1e-6)
    assert got["actor/ppo_kl"] == pytest.approx(want_kl, rel=1e-5)
    assert got["actor/pg_loss"] == pytest.approx(verls["actor/pg_loss"], rel=1e-9)  # already a token mean
    # verl's own: the unweighted mean over ranks and micro-batches, the padding-only one counted as 0
    assert verls["actor/pg_clipfrac"] != pytest.approx(want_clip, rel=1e-3)


def _verls(config, out, td):
    from verl.workers.utils.losses import ppo_loss as verls_ppo_loss
    return verls_ppo_loss(config, out, td)
