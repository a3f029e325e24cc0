"""A CPU stand-in for verl's vLLM server: a Ray actor with the server's token-in/token-out
`generate`, decoding with the local engine's `Runner` (`marl.engine.local.decode`).

verl's `LLMServerClient` and router drive it exactly as they drive vLLM replicas, so the verl
engine's rollout path (client, sticky routing, Ray rollout workers) runs and is tested on a
machine without GPUs. It keeps a log of what it was asked and what it answered, for tests.
"""
from __future__ import annotations

import ray
import torch
from verl.workers.rollout.replica import TokenOutput

from marl.engine.local import load_model
from marl.engine.local.decode import Runner


@ray.remote(num_cpus=0)
class CpuTokenServer:
    def __init__(self, model_path: str, name: str, seed: int = 0):
        torch.set_num_threads(1)
        torch.manual_seed(seed)
        model, tok, _ = load_model(model_path, "float32")
        self.runner, self.name, self.log = Runner(model, tok, max_new_tokens=1), name, []

    async def generate(self, prompt_ids: list[int], sampling_params: dict, request_id: str,
                       image_data=None, video_data=None, **kwargs) -> TokenOutput:
        params = dict(sampling_params)
        self.runner.max_new_tokens = params["max_tokens"]
        comp = self.runner.generate_batch([list(prompt_ids)], params["temperature"])[0]
        self.log.append({"prompt_ids": list(prompt_ids), "sampling_params": params,
                         "token_ids": comp.token_ids, "log_probs": comp.logprobs})
        return TokenOutput(token_ids=comp.token_ids, log_probs=comp.logprobs if params.get("logprobs") else None,
                           stop_reason="completed", extra_fields={"global_steps": 0, "server": self.name})

    def calls(self) -> list[dict]:
        return self.log
