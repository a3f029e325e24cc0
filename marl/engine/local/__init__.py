"""`engine=local`: one process, HF transformers on cpu or cuda.

Policies (`policies.py`): `shared` (one model), `per_role` (a model per role: copies of one warm
start), `lora` (an adapter per role on one frozen base). Generation: every policy's
`BatchingClient` feeds one `Batcher` (`batching.py`), which serves a step's requests in
batched decoding calls (`decode.py`); the adapters of a LoRA base share one call. Update:
`update.py`, over the packed forward of `logprobs.py`. Checkpoints: `policy_<id>.pt` per policy
(weights or adapter, optimizer, schedule). The prompt budget: `prompt_budget`.
"""
from __future__ import annotations

import copy
import random
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from marl.engine import Engine, EngineSpec, UpdateSpec, reporting
from marl.engine.local.batching import Batcher, BatchingClient
from marl.engine.local.decode import DEFAULT_MAX_BATCH, Runner
from marl.engine.local.policies import FullPolicy, LoraPolicy, add_adapters
from marl.engine.local.update import update_policy
from marl.engine.tokens import encode_prompt, load_tokenizer
from marl.types import TrainSample


def load_model(path: str, dtype: str):
    """(model, tokenizer, chat) from a local HF directory (`marl.engine.tokens`)."""
    tok, chat = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    return model.eval(), tok, chat


def prompt_budget(path: str, max_new_tokens: int) -> int | None:
    """The longest prompt the local engine generates from: the model's context
    (`max_position_embeddings` in its config.json). A prompt longer than that is a penalised
    episode end (marl.rollout), as a prompt over engine.prompt_length is under engine=verl. The
    response may run past the context, as HF generation allows (vLLM would refuse it: there
    max_model_len = engine.prompt_length + model.max_new_tokens); the tighter rule, context less
    max_new_tokens, would end 1% of the tiny code task's episodes (coder prompts of later turns),
    changing its published figures. A model whose config states no context has no limit (None).
    A `max_new_tokens` as long as the context is refused: no prompt and response fit at all."""
    context = getattr(AutoConfig.from_pretrained(path).get_text_config(), "max_position_embeddings", None)
    if context is None:
        return None
    if max_new_tokens >= context:
        raise ValueError(f"model.max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's context "
                         f"of {context} tokens (max_position_embeddings in {path}/config.json); allowed: "
                         f"model.max_new_tokens < {context}")
    return context


class LocalEngine(Engine):
    def __init__(self, spec: EngineSpec):
        self.spec = spec
        self.prompt_budget = prompt_budget(spec.model_path, spec.max_new_tokens)  # refused before the model loads
        model, self.tokenizer, self.chat = load_model(spec.model_path, spec.dtype)
        model = model.to(spec.device)
        pad = self.tokenizer.pad_token_id
        max_batch = spec.max_batch or DEFAULT_MAX_BATCH  # engine.max_batch=0: the engine's default
        self.batcher = Batcher()
        self.policies: dict = {}
        self.clients: dict[str, BatchingClient] = {}
        if spec.kind == "lora":
            base = add_adapters(model, spec.policy_ids, spec.lora, spec.seed)
            runner = Runner(base, self.tokenizer, spec.max_new_tokens, max_batch)
            self.runners = [runner]
            for n in spec.policy_ids:
                self.policies[n] = LoraPolicy(n, base, pad, spec.optim, spec.reference)
                self.clients[n] = BatchingClient(runner, self.batcher, adapter=n)
        else:
            self.runners = []
            for i, n in enumerate(spec.policy_ids):  # per_role: independent copies of one warm start
                m = model if i == 0 else copy.deepcopy(model)
                self.policies[n] = FullPolicy(n, m, pad, spec.optim, spec.reference)
                self.runners.append(Runner(m, self.tokenizer, spec.max_new_tokens, max_batch))
                self.clients[n] = BatchingClient(self.runners[-1], self.batcher)

    def client(self, policy_id: str) -> BatchingClient:
        self.check_policy(policy_id)
        return self.clients[policy_id]

    def encode(self, policy_id: str, prompt: str) -> list[int]:
        return encode_prompt(self.tokenizer, self.chat, prompt)

    def max_prompt_tokens(self, policy_id: str) -> int | None:
        self.check_policy(policy_id)
        return self.prompt_budget

    async def gather(self, jobs, on_done=None):
        return await self.batcher.gather([reporting(i, job.run(self), on_done) for i, job in enumerate(jobs)])

    def update(self, policy_id: str, batch: list[TrainSample], spec: UpdateSpec, rng: random.Random) -> dict:
        self.check_policy(policy_id)
        if any(x.sample.policy != policy_id for x in batch):
            raise ValueError(f"update({policy_id!r}) got samples generated by another policy")
        return update_policy(self.policies[policy_id], batch, spec, rng)

    def save(self, directory: Path) -> None:
        for n, p in self.policies.items():
            torch.save({"kind": self.spec.kind, "weights": p.weights(), "optimizer": p.optimizer.state_dict(),
                        "scheduler": p.scheduler.state_dict()}, Path(directory) / f"policy_{n}.pt")

    def load(self, directory: Path, weights_only: bool = False) -> None:
        directory = Path(directory)
        for n, p in self.policies.items():
            f = directory / f"policy_{n}.pt"
            if not f.exists():
                have = sorted(x.stem.removeprefix("policy_") for x in directory.glob("policy_*.pt"))
                raise ValueError(f"checkpoint {directory} has no policy {n!r} (it has {have}): "
                                 f"was it saved by a run with another policy kind than {self.spec.kind!r}?")
            blob = torch.load(f, map_location=self.spec.device, weights_only=False)
            if (blob["kind"] == "lora") != (self.spec.kind == "lora"):  # adapters vs whole models
                raise ValueError(f"checkpoint {f} holds a {blob['kind']!r} policy; this run's policy is {self.spec.kind!r}")
            p.load_weights(blob["weights"])
            if not weights_only:
                p.optimizer.load_state_dict(blob["optimizer"])
                p.scheduler.load_state_dict(blob["scheduler"])

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in self.runners:
            for k, v in r.stats.items():
                out[k] = out.get(k, 0.0) + v
        return out

    def reset_stats(self) -> None:
        for r in self.runners:
            r.stats.clear()
