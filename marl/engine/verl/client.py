"""marl's `GenerateClient` over verl's `LLMServerClient` (vLLM or SGLang replicas behind verl's
sticky, least-loaded router).

Token ids and log-probs are kept exactly as the server returns them (text is decoded for the
harness only, never re-tokenised into a sample); the problem id is the request id, so verl's
router sends the K candidates of a group, and every later turn of the problem, to one replica,
where they share its prefix cache.
"""
from __future__ import annotations

import uuid

from marl.engine.stats import GenerateStats
from marl.types import Completion

ABORTED = ("aborted", "abort")


def sampling_params(temperature: float, max_new_tokens: int) -> dict:
    """marl's sampling (plain softmax at `temperature`: no top-p, top-k or repetition penalty;
    greedy at 0) as verl's server `generate` takes it, for vLLM and SGLang alike. `logprobs`
    asks for the sampled token's log-prob, which verl's vLLM config takes after temperature
    (`logprobs_mode=processed_logprobs`, set by marl.engine.verl.config)."""
    if temperature < 0 or max_new_tokens < 1:
        raise ValueError(f"temperature must be >= 0 and max_new_tokens >= 1, got {temperature}, {max_new_tokens}")
    return {"temperature": float(temperature), "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0,
            "max_tokens": int(max_new_tokens), "logprobs": True}


class VerlClient:
    def __init__(self, server, tokenizer, max_new_tokens: int, stats: GenerateStats | None = None):
        """server: a verl `LLMServerClient` (or anything with its `generate`)."""
        self.server, self.tok, self.max_new_tokens = server, tokenizer, max_new_tokens
        self.stats = stats or GenerateStats()

    async def generate(self, prompt_ids: list[int], temperature: float,
                       request_id: str | None = None, prompt: str | None = None) -> Completion:
        """From the ids (`prompt`, the text, is not sent: verl's servers take tokens)."""
        self.stats.begin()
        ids: list[int] = []
        try:
            out = await self.server.generate(request_id or uuid.uuid4().hex, prompt_ids=list(prompt_ids),
                                             sampling_params=sampling_params(temperature, self.max_new_tokens))
            ids = list(out.token_ids)
        finally:
            self.stats.end(len(ids))
        if out.stop_reason in ABORTED:
            raise RuntimeError(f"generation of request {request_id!r} was aborted by the rollout server")
        if not ids:
            raise RuntimeError(f"the rollout server returned no tokens for request {request_id!r} (max_tokens >= 1, "
                               "so even an immediate EOS is one token; SGLang does this when its log-probs and "
                               "tokens disagree)")
        if out.log_probs is None or len(out.log_probs) != len(ids):
            raise RuntimeError(f"the rollout server returned {len(ids)} tokens and "
                               f"{'no' if out.log_probs is None else len(out.log_probs)} log-probs; "
                               "marl needs one log-prob per token (rollout.calculate_log_probs)")
        return Completion(ids, [float(x) for x in out.log_probs], self.tok.decode(ids, skip_special_tokens=True))
