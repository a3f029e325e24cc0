"""marl samples -> the batch verl's FSDP workers train on (`to_batch`), and back (`rows`).

One row per sample: its own prompt (left-padded) and response (right-padded), exactly the token
ids the rollout recorded, with `uid` = the sample's group key and problem / turn / role / policy /
candidate alongside. verl's workers split a batch evenly over data-parallel ranks, so the row count
is padded to a multiple of `dp` with padding rows: a one-token prompt and a one-token response
with zero response mask, advantage and log-prob (verl's own padding shape), never copies of real
rows. Under token-mean loss aggregation they add nothing to the loss or to its token count.

Shapes: B rows (real + padding), P prompt width, R response width.
"""
from __future__ import annotations

import numpy as np
import torch

from marl.types import TrainSample

PAD_UID = "__pad__"


def check_one_policy_per_group(samples: list[TrainSample]) -> None:
    """A group (one (problem, turn, role)) is normalised as a whole: all of it must train one policy."""
    seen: dict[str, str] = {}
    for x in samples:
        s = x.sample
        if seen.setdefault(s.group_id, s.policy) != s.policy:
            raise ValueError(f"group {s.group_id!r} spans policies {seen[s.group_id]!r} and {s.policy!r}")


def to_batch(samples: list[TrainSample], dp: int, pad_id: int):
    """A verl `DataProto` of the samples (one policy's), padded to a multiple of `dp` rows.

    Tensors: prompts (B, P), responses (B, R), input_ids / attention_mask / position_ids (B, P+R),
    response_mask / advantages / rollout_log_probs (B, R). Non-tensors: uid, problem_id, turn,
    role, policy, candidate, is_pad. Meta: temperature (the rollout's: log-probs are taken at it).
    """
    from verl.protocol import DataProto

    if not samples:
        raise ValueError("to_batch needs at least one sample")
    check_one_policy_per_group(samples)
    temps = {x.sample.temperature for x in samples}
    if len(temps) != 1:
        raise ValueError(f"one update's samples share one sampling temperature; got {sorted(temps)}")
    if min(temps) <= 0:
        raise ValueError("greedy (temperature 0) samples have no sampling log-probs to train on")
    n_pad = -len(samples) % dp
    prompts = [list(x.sample.prompt_ids) for x in samples] + [[pad_id]] * n_pad
    responses = [list(x.sample.response_ids) for x in samples] + [[pad_id]] * n_pad
    if any(not p for p in prompts) or any(not r for r in responses):
        raise ValueError("every sample needs a non-empty prompt and response")
    B, P, R = len(prompts), max(map(len, prompts)), max(map(len, responses))
    prompt_t = torch.full((B, P), pad_id, dtype=torch.long)  # (B, P) left-padded
    resp_t = torch.full((B, R), pad_id, dtype=torch.long)  # (B, R) right-padded
    attn = torch.zeros(B, P + R, dtype=torch.long)  # (B, P+R)
    resp_mask = torch.zeros(B, R, dtype=torch.float32)  # (B, R) 1 on real response tokens
    logp = torch.zeros(B, R, dtype=torch.float32)  # (B, R)
    adv = torch.zeros(B, R, dtype=torch.float32)  # (B, R)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        prompt_t[i, P - len(p):] = torch.tensor(p)
        resp_t[i, :len(r)] = torch.tensor(r)
        attn[i, P - len(p):P + len(r)] = 1
        if i < len(samples):
            s = samples[i].sample
            resp_mask[i, :len(r)] = 1.0
            logp[i, :len(r)] = torch.tensor(s.logprobs, dtype=torch.float32)
            adv[i, :len(r)] = samples[i].advantage
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)  # (B, P+R) 0 at each row's first real token
    real = [x.sample for x in samples]
    pad = lambda v: [v] * n_pad  # noqa: E731
    non_tensors = {
        "uid": [s.group_id for s in real] + [f"{PAD_UID}{j}" for j in range(n_pad)],
        "problem_id": [s.problem_id for s in real] + pad(""),
        "turn": [s.turn for s in real] + pad(-1),
        "role": [s.role for s in real] + pad(""),
        "policy": [s.policy for s in real] + pad(real[0].policy),
        "candidate": [s.candidate for s in real] + pad(-1),
        "is_pad": [False] * len(real) + pad(True),
    }
    return DataProto.from_dict(
        tensors={"prompts": prompt_t, "responses": resp_t, "input_ids": torch.cat([prompt_t, resp_t], dim=1),
                 "attention_mask": attn, "position_ids": position_ids, "response_mask": resp_mask,
                 "advantages": adv, "rollout_log_probs": logp},
        non_tensors={k: np.array(v, dtype=object) for k, v in non_tensors.items()},
        meta_info={"temperature": temps.pop()})


def rows(batch) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids) of every row, padding rows included, read back through the masks."""
    P = batch.batch["prompts"].shape[1]
    out = []
    for ids, attn in zip(batch.batch["input_ids"].tolist(), batch.batch["attention_mask"].tolist()):
        out.append(([t for t, a in zip(ids[:P], attn[:P]) if a], [t for t, a in zip(ids[P:], attn[P:]) if a]))
    return out


def worker_input(batch, **meta):
    """The TensorDict verl's `ActorRolloutRefWorker` methods take: the batch without padding
    (jagged input_ids / position_ids, loss_mask = response_mask), with `meta` as non-tensor
    entries (temperature, global_batch_size, ...)."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    td = left_right_2_no_padding(batch.to_tensordict())
    tu.assign_non_tensor(td, **meta)
    return td
