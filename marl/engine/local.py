"""Local engine: one process, HF transformers on cpu or cuda.

`BatchingClient.generate` is the async token-in/token-out client the rollout awaits. Concurrent
requests (all problems x all K candidates of one (turn, role) step) are collected and served by
one left-padded HF `generate` call with the KV cache. The K candidates of a group share their
prompt: with `share_prefix` each distinct prompt is prefilled once and its cache copied to the
rows that share it, so only the decoding runs K times.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import torch
import torch.nn.functional as F

from marl.types import Completion

OLD_LOGPROB_MODES = ("auto", "recompute")  # train.old_logprob: see update_policy


class BatchingClient:
    def __init__(self, model, tokenizer, max_new_tokens: int, max_batch: int = 512, share_prefix: bool = True):
        self.model, self.tok, self.share_prefix = model, tokenizer, share_prefix
        self.max_new_tokens, self.max_batch = max_new_tokens, max_batch
        self.pad_id = tokenizer.pad_token_id
        self.eos_id = tokenizer.eos_token_id
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
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)  # (B, P) left-padded
        attn = torch.zeros_like(ids)
        for b, p in enumerate(prompts):
            ids[b, width - len(p):] = torch.tensor(p)
            attn[b, width - len(p):] = 1
        greedy = temperature <= 0
        device_ids, device_attn = ids.to(device), attn.to(device)
        cache = self._prefill(prompts, device_ids, device_attn) if self.share_prefix else None
        out = self.model.generate(
            input_ids=device_ids, attention_mask=device_attn, past_key_values=cache, do_sample=not greedy,
            temperature=None if greedy else temperature, top_k=None, top_p=None,
            max_new_tokens=self.max_new_tokens, eos_token_id=self.eos_id, pad_token_id=self.pad_id,
            output_logits=True, return_dict_in_generate=True)
        new = out.sequences[:, width:].cpu()  # (B, T)
        logits = torch.stack(out.logits, dim=1).float().cpu()  # (B, T, V) raw logits
        scaled = logits if greedy else logits / temperature
        lp = F.log_softmax(scaled, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)  # (B, T)
        comps = []
        for b in range(len(prompts)):
            toks = new[b].tolist()
            n = toks.index(self.eos_id) + 1 if self.eos_id in toks else len(toks)  # keep EOS: it is an action
            comps.append(Completion(toks[:n], lp[b, :n].tolist(),
                                    self.tok.decode(toks[:n], skip_special_tokens=True)))
        self.stats["calls"] += 1
        self.stats["sequences"] += len(prompts)
        self.stats["new_tokens"] += sum(len(c.token_ids) for c in comps)
        self.stats["seconds"] += time.perf_counter() - t0
        return comps


    def _prefill(self, prompts, ids, attn):
        """KV cache of every prompt but its last token, each distinct prompt (U of them) run once
        and its rows copied to the B requests that share it; None when nothing is shared.
        ids, attn: (B, P) left-padded. `generate` then runs only the last prompt token and the
        decoding, and computes the same positions (real tokens counted from 0) as the prefill."""
        uniq: dict[tuple, int] = {}
        idx = [uniq.setdefault(tuple(p), len(uniq)) for p in prompts]  # request -> distinct prompt
        if len(uniq) == len(prompts) or ids.shape[1] < 2:
            return None
        first = torch.tensor([idx.index(u) for u in range(len(uniq))], device=ids.device)  # (U,)
        u_ids, u_attn = ids[first, :-1], attn[first, :-1]  # (U, P - 1)
        pos = (u_attn.cumsum(-1) - 1).clamp(min=0)  # (U, P - 1)
        # logits_to_keep=1: only the cache is used; at a 151k vocabulary the logits of every prompt
        # position would be the largest tensor of the step.
        cache = self.model(input_ids=u_ids, attention_mask=u_attn, position_ids=pos, use_cache=True,
                           logits_to_keep=1).past_key_values
        cache.batch_select_indices(torch.tensor(idx, device=ids.device))  # (U, ...) -> (B, ...)
        self.stats["prefilled_prompts"] += len(uniq)
        return cache


def response_logprobs(model, prompt_ids: list[list[int]], response_ids: list[list[int]],
                      temperatures: list[float], pad_id: int, with_entropy: bool = False,
                      share_prefix: bool = True):
    """Log-probs of each response under `model`, at each sample's sampling temperature.

    With `share_prefix`, each distinct prompt is run once and its KV cache is indexed out to
    every sample that shares it (the K candidates of a group): the prompt is ~90% of a tiny-model
    sample's tokens, so this cuts the forward/backward cost about K-fold. Gradients flow through
    the shared cache. `share_prefix=False` runs every full sequence (the reference).

    Returns logprob (B, T), mask (B, T) and entropy (B, T) or None, T = longest response."""
    device = next(model.parameters()).device
    T = max(len(r) for r in response_ids)
    if share_prefix:
        step_logits, targets = _shared_prefix_logits(model, prompt_ids, response_ids, pad_id, device)
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


def _shared_prefix_logits(model, prompt_ids, response_ids, pad_id, device):
    """As `_full_logits`, running each distinct prompt once (U of them) and the responses on
    top of its cache. Prompts are left-padded so they all end at column P - 1."""
    uniq: dict[tuple, int] = {}
    idx = [uniq.setdefault(tuple(p), len(uniq)) for p in prompt_ids]  # sample -> distinct prompt
    prompts = list(uniq)
    P, T = max(len(p) for p in prompts), max(len(r) for r in response_ids)
    ids = torch.full((len(prompts), P), pad_id, dtype=torch.long)  # (U, P) left-padded
    attn = torch.zeros_like(ids)
    for u, p in enumerate(prompts):
        ids[u, P - len(p):] = torch.tensor(p)
        attn[u, P - len(p):] = 1
    pos = (attn.cumsum(-1) - 1).clamp(min=0)  # (U, P) positions count real tokens only
    out = model(input_ids=ids.to(device), attention_mask=attn.to(device), position_ids=pos.to(device),
                use_cache=True, logits_to_keep=1)  # (U, 1, V): only the last prompt position predicts a response token
    sel = torch.tensor(idx, device=device)  # (B,)
    cache = out.past_key_values
    cache.batch_select_indices(sel)  # (U, ...) -> (B, ...): indexing keeps the graph
    resp = torch.full((len(idx), T), pad_id, dtype=torch.long)  # (B, T) right-padded
    r_attn = torch.zeros_like(resp)
    for b, r in enumerate(response_ids):
        resp[b, :len(r)] = torch.tensor(r)
        r_attn[b, :len(r)] = 1
    r_pos = torch.tensor([len(p) for p in prompt_ids]).unsqueeze(1) + torch.arange(T)  # (B, T)
    full_attn = torch.cat([attn[idx], r_attn], dim=1).to(device)  # (B, P + T)
    r_logits = model(input_ids=resp.to(device), attention_mask=full_attn, position_ids=r_pos.to(device),
                     past_key_values=cache).logits  # (B, T, V)
    # Token 0 is predicted by the prompt's last position, token j > 0 by response position j - 1.
    first = out.logits[:, -1][sel].unsqueeze(1)  # (B, 1, V)
    step_logits = torch.cat([first, r_logits[:, :-1]], dim=1)  # (B, T, V)
    return step_logits, resp.to(device)


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
