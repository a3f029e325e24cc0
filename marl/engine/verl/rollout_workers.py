"""Rollouts in CPU Ray actors, as verl places its agent-loop workers: each `RolloutWorker` runs
`marl.rollout` unchanged over verl generate clients, one per policy, whose requests go through
that policy's router to its GPU replicas.

A worker holds, per policy, the tokenizer (prompt ids by `marl.engine.tokens`, the rule the local
engine uses) and a `VerlClient` over an `LLMServerClient`; `run_on_workers` deals a step's jobs
out to the workers and returns the episodes in the jobs' order.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import ray
from omegaconf import OmegaConf

from marl.engine import PolicyClients
from marl.engine.tokens import encode_prompt, load_tokenizer
from marl.engine.stats import GenerateStats
from marl.engine.verl.client import VerlClient


@dataclass(frozen=True)
class Endpoint:
    """Where a policy's rollout requests go: its router (verl's load balancer actor) and the
    tokenizer directory and limits its replicas were started with."""

    model_path: str
    router: object  # ray ActorHandle of verl's GlobalRequestLoadBalancer
    backend: str    # engine.rollout_backend: vllm | cpu (verl's client branches on it)
    max_new_tokens: int
    prompt_length: int  # engine.prompt_length: the longest prompt sent (PolicyClients.max_prompt_tokens)


class RolloutSide(PolicyClients):
    """What `marl.rollout` needs of the engine (`PolicyClients`: `encode`, `client`,
    `max_prompt_tokens`) inside a worker."""

    def __init__(self, endpoints: dict[str, Endpoint], stats: GenerateStats):
        from verl.workers.rollout.llm_server import LLMServerClient

        self.tokenizers, self.clients = {}, {}
        self.prompt_lengths = {pid: ep.prompt_length for pid, ep in endpoints.items()}
        for pid, ep in endpoints.items():
            tok, chat = load_tokenizer(ep.model_path)
            # LLMServerClient reads only these keys of verl's config
            cfg = OmegaConf.create({"actor_rollout_ref": {"rollout": {"name": ep.backend, "full_determinism": False}}})
            self.tokenizers[pid] = (tok, chat)
            self.clients[pid] = VerlClient(LLMServerClient(cfg, load_balancer_handle=ep.router), tok,
                                           ep.max_new_tokens, stats)

    def encode(self, policy_id: str, prompt: str) -> list[int]:
        tok, chat = self.tokenizers[policy_id]
        return encode_prompt(tok, chat, prompt)

    def max_prompt_tokens(self, policy_id: str) -> int:
        self.client(policy_id)  # refuses an unknown policy
        return self.prompt_lengths[policy_id]

    def client(self, policy_id: str) -> VerlClient:
        if policy_id not in self.clients:
            raise ValueError(f"no policy {policy_id!r} in this engine; policies: {sorted(self.clients)}")
        return self.clients[policy_id]


@ray.remote(num_cpus=1)
class RolloutWorker:
    def __init__(self, endpoints: dict[str, Endpoint], threads: int = 1):
        import torch

        torch.set_num_threads(threads)
        self.stats = GenerateStats()
        self.side = RolloutSide(endpoints, self.stats)

    async def run(self, jobs: list) -> tuple[list, dict]:
        """(episodes in the order of `jobs`, generate stats of this call)."""
        self.stats.reset()
        episodes = await asyncio.gather(*[job.run(self.side) for job in jobs])
        return list(episodes), dict(self.stats.counts)


async def run_on_workers(workers: list, jobs: list) -> tuple[list, dict]:
    """Jobs dealt round-robin over the workers; (episodes in the order of `jobs`, stats summed,
    seconds the longest worker's: they run at the same time)."""
    W = len(workers)
    parts = [(w, list(range(w, len(jobs), W))) for w in range(W)]
    parts = [(w, idx) for w, idx in parts if idx]
    outs = await asyncio.gather(*[workers[w].run.remote([jobs[i] for i in idx]) for w, idx in parts])
    episodes: list = [None] * len(jobs)
    stats = {"calls": 0.0, "sequences": 0.0, "new_tokens": 0.0, "seconds": 0.0}
    for (w, idx), (eps, st) in zip(parts, outs):
        for i, ep in zip(idx, eps):
            episodes[i] = ep
        for k in ("calls", "sequences", "new_tokens"):
            stats[k] += st[k]
        stats["seconds"] = max(stats["seconds"], st["seconds"])
    return episodes, stats
