"""Log-probs of given responses under a model: the update's forward, with each group's
responses packed after their shared prompt under a tree mask."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from marl.packing import first_fit


def response_logprobs(model, prompt_ids: list[list[int]], response_ids: list[list[int]],
                      temperatures: list[float], pad_id: int, with_entropy: bool = False,
                      share_prefix: bool = True):
    """Log-probs of each response under `model`, at each sample's sampling temperature.

    With `share_prefix`, each distinct prompt is run once with the responses that share it (the
    K candidates of a group) packed after it under a tree mask (`_packed_logits`): the prompt is
    most of a tiny-model sample's tokens, so this cuts the forward/backward cost about K-fold,
    and no response is padded to the longest. `share_prefix=False` runs every full sequence
    (the reference).

    Returns logprob (B, T), mask (B, T) and entropy (B, T) or None, T = longest response."""
    device = next(model.parameters()).device
    T = max(len(r) for r in response_ids)
    if share_prefix:
        step_logits, targets = _packed_logits(model, prompt_ids, response_ids, pad_id, device)
    else:
        step_logits, targets = _full_logits(model, prompt_ids, response_ids, pad_id, device)
    temp = torch.tensor([t if t > 0 else 1.0 for t in temperatures], device=device).view(-1, 1, 1)
    mask = (torch.arange(T, device=device).unsqueeze(0)
            < torch.tensor([len(r) for r in response_ids], device=device).unsqueeze(1)).float()  # (B, T)
    logp_all = F.log_softmax(step_logits.float() / temp, dim=-1)  # (B, T, V)
    logprob = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask  # (B, T)
    entropy = None
    if with_entropy:
        entropy = -(logp_all.exp() * logp_all).sum(-1) * mask  # (B, T)
    return logprob, mask, entropy


def _full_logits(model, prompt_ids, response_ids, pad_id, device):
    """Every prompt+response run in full. Returns the logits that predict each response token
    (B, T, V) and those tokens (B, T)."""
    seqs = [p + r for p, r in zip(prompt_ids, response_ids)]
    width, T = max(len(s) for s in seqs), max(len(r) for r in response_ids)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, L) right-padded
    attn = torch.zeros_like(ids)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = torch.tensor(s)
        attn[b, :len(s)] = 1
    ids, attn = ids.to(device), attn.to(device)
    logits = model(input_ids=ids, attention_mask=attn).logits  # (B, L, V)
    # Response token j of sample b sits at position P_b + j and is predicted at P_b + j - 1.
    starts = torch.tensor([len(p) - 1 for p in prompt_ids], device=device)  # (B,)
    pos = (starts.unsqueeze(1) + torch.arange(T, device=device)).clamp(max=width - 2)  # (B, T)
    step_logits = logits.gather(1, pos.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))  # (B, T, V)
    return step_logits, ids.gather(1, (pos + 1).clamp(max=width - 1))


def _linear_per_attention(config) -> float:
    """FLOPs of a token's linear layers over those of one (query, key) pair of attention, from a
    decoder config (768 for the tiny model; measured on the CPU: about 640). inf when unknown."""
    try:
        h, i, nh = config.hidden_size, config.intermediate_size, config.num_attention_heads
        hd = getattr(config, "head_dim", None) or h // nh
        nkv = getattr(config, "num_key_value_heads", None) or nh
    except AttributeError:
        return float("inf")
    linear = 2 * h * nh * hd + 2 * h * nkv * hd + 3 * h * i  # q + o, k + v, gate + up + down
    return linear / (2 * nh * hd)  # per pair: q.k and p.v, nh heads of hd


def _packed_logits(model, prompt_ids, response_ids, pad_id, device):
    """As `_full_logits`, running each distinct prompt once (U of them), with its group's K
    responses packed after it in one row, [prompt | r_1 | ... | r_K], and no padding between
    them: a response attends to its prompt and to itself (a tree mask), and its positions
    continue the prompt's. Groups are packed first fit, by decreasing length, in rows of W
    columns (W at least the longest group), so a row can hold several short groups.

    Why not the prompt's KV cache copied to the K rows of its responses: those rows are padded
    to the longest response (the mean answer is about half of it), and the copy's backward is an
    accumulating scatter; this runs the real tokens once each, in one forward."""
    uniq: dict[tuple, int] = {}
    idx = [uniq.setdefault(tuple(p), len(uniq)) for p in prompt_ids]  # sample -> distinct prompt
    members: list[list[int]] = [[] for _ in uniq]
    for b, u in enumerate(idx):
        members[u].append(b)
    prompts = list(uniq)
    if min(len(p) for p in prompts) == 0:
        raise ValueError("an empty prompt: the first response token would have nothing to be predicted by")
    size = [len(prompts[u]) + sum(len(response_ids[b]) for b in members[u]) for u in range(len(prompts))]
    # The mask is dense, so a row costs W * (linear work per token + W * attention work per
    # key): of the widths tried, the one with the least total work.
    ratio = _linear_per_attention(model.config)
    W, rows = min(((w, first_fit(size, w)) for w in {int(max(size) * f) for f in (1, 1.25, 1.5, 2, 3)}),
                  key=lambda wr: len(wr[1]) * wr[0] * (1 + wr[0] / ratio))
    n, T = len(rows), max(len(r) for r in response_ids)
    ids, pos = [[pad_id] * W for _ in range(n)], [[0] * W for _ in range(n)]  # (n, W)
    group = [[-1] * W for _ in range(n)]  # (n, W): the distinct prompt a token belongs to; -1 = padding
    owner = [[-1] * W for _ in range(n)]  # (n, W): the sample whose response it is; -1 = prompt or padding
    src = [[0] * T for _ in response_ids]  # (B, T): flat index (row * W + column) that predicts each token
    for r, us in enumerate(rows):
        c = 0
        for u in us:
            p = prompts[u]
            ids[r][c:c + len(p)], pos[r][c:c + len(p)] = p, range(len(p))
            group[r][c:c + len(p)] = [u] * len(p)
            end = c + len(p) - 1  # the prompt's last token predicts each response's first
            c += len(p)
            for b in members[u]:
                m = len(response_ids[b])
                ids[r][c:c + m], pos[r][c:c + m] = response_ids[b], range(len(p), len(p) + m)
                group[r][c:c + m], owner[r][c:c + m] = [u] * m, [b] * m
                src[b][:m] = [r * W + end] + [r * W + c + j for j in range(m - 1)]
                c += m
    group_t, owner_t = torch.tensor(group), torch.tensor(owner)  # (n, W)
    col = torch.arange(W)
    mask = ((col.view(1, -1, 1) >= col.view(1, 1, -1))  # causal: key column <= query column
            & (group_t.unsqueeze(2) == group_t.unsqueeze(1)) & (group_t >= 0).unsqueeze(1)  # same group, not padding
            & ((owner_t == -1).unsqueeze(1) | (owner_t.unsqueeze(2) == owner_t.unsqueeze(1))))  # prompt or own response
    mask |= torch.eye(W, dtype=torch.bool)  # (n, W, W); padding attends to itself (no empty softmax row)
    logits = model(input_ids=torch.tensor(ids, device=device), attention_mask=mask.unsqueeze(1).to(device),
                   position_ids=torch.tensor(pos, device=device)).logits  # (n, W, V)
    flat = torch.tensor(src, device=device).view(-1)  # (B * T,); index_select: its backward is a plain add
    step_logits = logits.flatten(0, 1).index_select(0, flat).view(len(response_ids), T, -1)  # (n * W, V) -> (B, T, V)
    targets = torch.full((len(response_ids), T), pad_id, dtype=torch.long)  # (B, T) right-padded
    for b, resp in enumerate(response_ids):
        targets[b, :len(resp)] = torch.tensor(resp)
    return step_logits, targets.to(device)
