"""Batched decoding with the KV cache, for one model (`Runner`), and the loop itself (`decode`).

`decode` draws what HF `generate(do_sample=True)` draws, token for token, but lets rows leave
the batch when they end and keeps per-step log-probs instead of (B, T, V) logits. The K
candidates of a group share their prompt: with `share_prefix` each distinct prompt is prefilled
once and its cache copied to the rows that share it, so only the decoding runs K times.
"""
from __future__ import annotations

import time
from collections import defaultdict

import torch
import torch.nn.functional as F

from marl.types import Completion

DEFAULT_MAX_BATCH = 512  # most rows in one decoding call where engine.max_batch=0 leaves it to the engine


class Runner:
    """Decoding calls on one model. With several LoRA adapters on the model, each row of a call
    can name its own (`adapters`), so every role's requests share one call."""

    def __init__(self, model, tokenizer, max_new_tokens: int, max_batch: int = DEFAULT_MAX_BATCH,
                 share_prefix: bool = True):
        # refused here, not at the first batch: a batch of 0 rows per call never serves a request
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"Runner max_batch (the most sequences in one decoding call) must be an integer >= 1, "
                             f"got {max_batch!r}; engine.max_batch=0 asks for the engine's default, {DEFAULT_MAX_BATCH}")
        self.model, self.tok, self.share_prefix = model, tokenizer, share_prefix
        self.max_new_tokens, self.max_batch = max_new_tokens, max_batch
        self.pad_id, self.eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
        self.min_new_tokens = 0  # EOS is masked before this many tokens (benchmarks/generate.py's fixed regime)
        self.stats = defaultdict(float)  # generate calls, sequences, new tokens, seconds

    @torch.no_grad()
    def generate_batch(self, prompts: list[list[int]], temperature: float,
                       adapters: list[str] | None = None) -> list[Completion]:
        """prompts: B token-id lists; adapters: B LoRA adapter names or None. Greedy when temperature == 0."""
        t0 = time.perf_counter()
        tokens, logprobs, lengths, stats = decode(
            self.model, prompts, temperature, self.max_new_tokens, self.eos_id, self.pad_id,
            share_prefix=self.share_prefix, min_new_tokens=self.min_new_tokens, adapters=adapters)
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
           pad_id: int, share_prefix: bool = True, min_new_tokens: int = 0, adapters: list[str] | None = None):
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
    - Log-probs are taken per step, never the (B, N, V) logits (151k-token vocabularies).
    - `adapters` (B LoRA adapter names, a PEFT model) runs each row through its own adapter:
      one name for all rows activates it; several go to PEFT's mixed-batch forward, each
      forward given the names of the rows it runs."""
    names = None
    if adapters is not None:
        if len(set(adapters)) == 1:
            model.set_adapter(adapters[0])
        else:
            names = list(adapters)
    device = next(model.parameters()).device
    B, P = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((B, P), pad_id, dtype=torch.long)  # (B, P) left-padded
    attn = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, P - len(p):] = torch.tensor(p)
        attn[b, P - len(p):] = 1
    ids, attn = ids.to(device), attn.to(device)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)  # (B, P) positions count real tokens only
    uniq: dict[tuple, int] = {}  # a prompt is shared only by rows of one adapter
    idx = [uniq.setdefault((names[b] if names else None, tuple(p)), len(uniq))
           for b, p in enumerate(prompts)]  # request -> distinct prompt
    stats = {}
    if share_prefix and len(uniq) < B:
        first = torch.tensor([idx.index(u) for u in range(len(uniq))], device=device)  # (U,)
        out = model(input_ids=ids[first], attention_mask=attn[first], position_ids=pos[first],
                    use_cache=True, logits_to_keep=1, **_rows(names, first.tolist()))  # logits (U, 1, V): only the last position is sampled from
        sel = torch.tensor(idx, device=device)  # (B,)
        cache, logits = out.past_key_values, out.logits[:, -1][sel]  # logits (U, V) -> (B, V)
        cache.batch_select_indices(sel)  # (U, ...) -> (B, ...)
        stats["prefilled_prompts"] = len(uniq)
    else:
        out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1,
                    **_rows(names, range(B)))
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
                       past_key_values=cache, use_cache=True, **_rows(names, live.tolist())).logits[:, -1]  # (L, V)
    return tokens.cpu(), logprobs.cpu(), lengths.cpu(), stats


def _rows(names: list[str] | None, rows) -> dict:
    """The `adapter_names` kwarg of a mixed-adapter forward over `rows`; nothing otherwise."""
    return {} if names is None else {"adapter_names": [names[r] for r in rows]}
