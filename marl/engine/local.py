"""Local engine: one process, HF transformers on cpu or cuda.

`BatchingClient.generate` is the async token-in/token-out client the rollout awaits. Concurrent
requests (all problems x all K candidates of one (turn, role) step) are collected and served by
one left-padded batched decoding loop with the KV cache (`decode`: HF `generate`'s draws, rows
leave the batch when they end). The K candidates of a group share their prompt: with
`share_prefix` each distinct prompt is prefilled once and its cache copied to the rows that
share it, so only the decoding runs K times; the update runs it once too (`_packed_logits`).
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import torch
import torch.nn.functional as F

from marl.packing import first_fit
from marl.types import Completion

OLD_LOGPROB_MODES = ("auto", "recompute")  # train.old_logprob: see update_policy


class BatchingClient:
    def __init__(self, model, tokenizer, max_new_tokens: int, max_batch: int = 512, share_prefix: bool = True):
        self.model, self.tok, self.share_prefix = model, tokenizer, share_prefix
        self.max_new_tokens, self.max_batch = max_new_tokens, max_batch
        self.pad_id = tokenizer.pad_token_id
        self.eos_id = tokenizer.eos_token_id
        self.min_new_tokens = 0  # EOS is masked before this many tokens (benchmarks/generate.py's fixed regime)
        self._pending: list[tuple[list[int], float, asyncio.Future]] = []
        self._flushing = False
        self.stats = defaultdict(float)  # generate calls, sequences, new tokens, seconds

    async def generate(self, prompt_ids: list[int], temperature: float) -> Completion:
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((prompt_ids, temperature, fut))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        # Let every runnable rollout reach its next generate() before serving the batch.
        seen = -1
        while seen != len(self._pending):
            seen = len(self._pending)
            await asyncio.sleep(0)
        batch, self._pending, self._flushing = self._pending, [], False
        by_temp: dict[float, list] = defaultdict(list)
        for req in batch:
            by_temp[req[1]].append(req)
        for temp, reqs in by_temp.items():
            for i in range(0, len(reqs), self.max_batch):
                chunk = reqs[i:i + self.max_batch]
                try:
                    outs = self.generate_batch([r[0] for r in chunk], temp)
                except Exception as e:  # surface the error in every waiting rollout
                    for r in chunk:
                        r[2].set_exception(e)
                    continue
                for r, out in zip(chunk, outs):
                    r[2].set_result(out)

    @torch.no_grad()
    def generate_batch(self, prompts: list[list[int]], temperature: float) -> list[Completion]:
        """prompts: B token-id lists. Greedy when temperature == 0."""
        t0 = time.perf_counter()
        tokens, logprobs, lengths, stats = decode(
            self.model, prompts, temperature, self.max_new_tokens, self.eos_id, self.pad_id,
            share_prefix=self.share_prefix, min_new_tokens=self.min_new_tokens)
        comps = [Completion(toks[:n], lp[:n], self.tok.decode(toks[:n], skip_special_tokens=True))
                 for toks, lp, n in zip(tokens.tolist(), logprobs.tolist(), lengths.tolist())]
        for k, v in stats.items():
            self.stats[k] += v
        self.stats["calls"] += 1
        self.stats["sequences"] += len(prompts)
        self.stats["new_tokens"] += int(lengths.sum())
        self.stats["seconds"] += time.perf_counter() - t0
        return comps


@torch.no_grad()
def decode(model, prompts: list[list[int]], temperature: float, max_new_tokens: int, eos_id: int,
           pad_id: int, share_prefix: bool = True, min_new_tokens: int = 0):
    """Sample (greedy when temperature <= 0) up to N = max_new_tokens tokens after each of B
    prompts, with the KV cache. Returns tokens (B, N) (pad after the end), their log-probs
    (B, N) at `temperature`, lengths (B,) (EOS counted: it is an action) and stats.

    - Each distinct prompt (U of them) is prefilled once and its cache rows copied to the
      requests that share it (`share_prefix`): the K candidates of a group decode apart.
    - A row leaves the batch (and its cache rows) as soon as it ends, so short answers do not
      pay for the longest one (HF `generate` decodes finished rows to the end as padding).
    - The draws are HF `generate(do_sample=True)`'s, token for token: `torch.multinomial(p, 1)`
      is argmax(p / q) with q ~ Exp(1) of p's shape, so every step draws q for all B rows and
      the live rows take theirs; a row's tokens do not depend on when the others end
      (tests/marl/test_engine.py compares the two).
    - Log-probs are taken per step, never the (B, N, V) logits (151k-token vocabularies)."""
    device = next(model.parameters()).device
    B, P = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((B, P), pad_id, dtype=torch.long)  # (B, P) left-padded
    attn = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, P - len(p):] = torch.tensor(p)
        attn[b, P - len(p):] = 1
    ids, attn = ids.to(device), attn.to(device)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)  # (B, P) positions count real tokens only
    uniq: dict[tuple, int] = {}
    idx = [uniq.setdefault(tuple(p), len(uniq)) for p in prompts]  # request -> distinct prompt
    stats = {}
    if share_prefix and len(uniq) < B:
        first = torch.tensor([idx.index(u) for u in range(len(uniq))], device=device)  # (U,)
        out = model(input_ids=ids[first], attention_mask=attn[first], position_ids=pos[first],
                    use_cache=True, logits_to_keep=1)  # logits (U, 1, V): only the last position is sampled from
        sel = torch.tensor(idx, device=device)  # (B,)
        cache, logits = out.past_key_values, out.logits[:, -1][sel]  # logits (U, V) -> (B, V)
        cache.batch_select_indices(sel)  # (U, ...) -> (B, ...)
        stats["prefilled_prompts"] = len(uniq)
    else:
        out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1)
        cache, logits = out.past_key_values, out.logits[:, -1]  # (B, V)
    N, V = max_new_tokens, logits.shape[-1]
    tokens = torch.full((B, N), pad_id, dtype=torch.long, device=device)  # (B, N)
    logprobs = torch.zeros((B, N), device=device)  # (B, N)
    lengths = torch.zeros(B, dtype=torch.long, device=device)  # (B,)
    live, last = torch.arange(B, device=device), pos[:, -1]  # (L,) rows still decoding, their last position
    for t in range(N):
        scores = logits.float()  # (L, V)
        if t < min_new_tokens:
            scores[:, eos_id] = float("-inf")
        if temperature <= 0:
            nxt, logp = scores.argmax(-1), F.log_softmax(scores, dim=-1)  # greedy: log-probs at T = 1
        else:
            scaled = scores / temperature
            q = torch.empty((B, V), device=device).exponential_(1)  # (B, V): every row's draw, as multinomial
            nxt = (F.softmax(scaled, dim=-1) / q[live]).argmax(-1)  # (L,)
            logp = F.log_softmax(scaled, dim=-1)
        tokens[live, t] = nxt
        logprobs[live, t] = logp.gather(-1, nxt.unsqueeze(-1)).squeeze(-1)
        lengths[live] = t + 1
        going = nxt != eos_id  # (L,)
        if t == N - 1 or not going.any():
            break
        if not going.all():  # drop the rows that ended, from the batch and the cache
            keep = going.nonzero().squeeze(-1)  # (L',)
            live, nxt, attn, last = live[keep], nxt[keep], attn[keep], last[keep]
            cache.batch_select_indices(keep)
        attn = torch.cat([attn, attn.new_ones((len(live), 1))], dim=1)  # (L, P + t + 1)
        last = last + 1
        logits = model(input_ids=nxt.unsqueeze(-1), attention_mask=attn, position_ids=last.unsqueeze(-1),
                       past_key_values=cache, use_cache=True).logits[:, -1]  # (L, V)
    return tokens.cpu(), logprobs.cpu(), lengths.cpu(), stats


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


def update_policy(policy, samples, algo, train, rng) -> dict[str, float]:
    """PPO epochs over `samples` (all from this policy) in mini-batches (one optimizer step each)
    split into micro-batches (gradient accumulation; token-mean over the whole mini-batch).

    Old log-probs are the pre-update weights' at each sample's temperature, so the first
    mini-batch's ratio is 1 and later ones measure how far the update has moved. When the update
    is on-policy (one epoch, every sample in one mini-batch), no optimizer step comes
    before any sample's loss, so those log-probs are exactly what the training forward computes:
    it reuses them, detached, instead of a second no-grad pass over every sample (as TRL and verl
    do). `train.old_logprob=recompute` always runs that pass (the reference for the tests)."""
    from marl.loss import ppo_loss  # verl import cost paid only when training

    model, pad = policy.model, policy.tokenizer.pad_token_id
    mb, micro = train.mini_batch, train.micro_batch

    def chunks(xs, n):
        return [xs[i:i + n] for i in range(0, len(xs), n)]

    if train.old_logprob not in OLD_LOGPROB_MODES:
        raise ValueError(f"train.old_logprob={train.old_logprob!r}; allowed: {', '.join(OLD_LOGPROB_MODES)}")
    reuse = train.old_logprob == "auto" and train.ppo_epochs == 1 and len(samples) <= mb
    t0 = time.perf_counter()
    with torch.no_grad():
        old, ref = {}, {}
        for part in chunks(samples, micro):
            if reuse and policy.ref_model is None:
                break
            args = ([s.prompt_ids for s in part], [s.response_ids for s in part], [s.temperature for s in part], pad)
            lp = None if reuse else response_logprobs(model, *args)[0]
            rlp = response_logprobs(policy.ref_model, *args)[0] if policy.ref_model is not None else None
            for j, s in enumerate(part):
                n = len(s.response_ids)
                if lp is not None:
                    old[id(s)] = lp[j, :n]
                if rlp is not None:
                    ref[id(s)] = rlp[j, :n]
    t_old = time.perf_counter() - t0
    model.train()
    metrics: dict[str, list[float]] = defaultdict(list)
    order = list(samples)
    n_mini = 0
    for _ in range(train.ppo_epochs):
        rng.shuffle(order)
        for mini in chunks(order, mb):
            n_tokens = sum(len(s.response_ids) for s in mini)
            n_mini += 1
            policy.optimizer.zero_grad(set_to_none=True)
            # Group members side by side, so a micro-batch runs their shared prompt once (the
            # gradient of a mini-batch does not depend on the order within it).
            for part in chunks(sorted(mini, key=lambda s: s.group_id), micro):
                lp, mask, ent = response_logprobs(
                    model, [s.prompt_ids for s in part], [s.response_ids for s in part],
                    [s.temperature for s in part], pad, with_entropy=algo.entropy_coef > 0)
                T = lp.shape[1]
                old_lp = (lp.detach() if reuse else
                          torch.stack([F.pad(old[id(s)], (0, T - len(s.response_ids))) for s in part]))  # (B, T)
                ref_lp = (torch.stack([F.pad(ref[id(s)], (0, T - len(s.response_ids))) for s in part])
                          if ref else None)  # (B, T)
                adv = torch.tensor([s.advantage for s in part], dtype=lp.dtype, device=lp.device)  # (B,)
                loss, m = ppo_loss(lp, old_lp.to(lp.device), adv, mask, n_tokens, clip=algo.clip,
                                   entropy=ent, entropy_coef=algo.entropy_coef,
                                   ref_logprob=None if ref_lp is None else ref_lp.to(lp.device),
                                   kl_coef=algo.kl_coef, kl_type=algo.kl_type)
                loss.backward()
                for key, v in m.items():
                    metrics[key].append(v)
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
            metrics["train/grad_norm"].append(float(gn))
            policy.optimizer.step()
    policy.scheduler.step()
    model.eval()
    out = {k: sum(v) / len(v) for k, v in metrics.items()}
    out["train/pg_loss"] = sum(metrics["train/pg_loss"]) / max(n_mini, 1)  # shares add up per mini-batch
    out["train/lr"] = policy.scheduler.get_last_lr()[0]
    out["timing/old_logprob"] = t_old  # the separate pass for pre-update (and reference) log-probs
    return out
