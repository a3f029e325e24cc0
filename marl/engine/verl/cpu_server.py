"""A CPU token server in a vLLM server's place (`engine.rollout_backend=cpu`): a Ray actor with the
server's token-in/token-out `generate`, decoding with the local engine's `Runner`
(`marl.engine.local.decode`), and the lifecycle calls verl's replicas make (sleep, wake-up, abort,
cache release: nothing to free on a CPU).

verl's `LLMServerClient` and router drive it exactly as they drive vLLM replicas. It receives
each trained version of the weights through `load_weights` (`cpu_rollout.CpuRolloutAdapter`) and
answers with the version it generated with, so a test can tell which weights produced a token.
It keeps a log of what it was asked and what it answered, for tests.
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
        self.version = -1  # the weights on disk; load_weights sets the trained version

    def ready(self) -> str:
        return self.name

    def load_weights(self, state: dict, version: int | None) -> int:
        """Copy whole named weights (HF names) into the model; every name must be one of its
        parameters, and every parameter not tied to another must be given."""
        model = self.runner.model
        params = dict(model.named_parameters(remove_duplicate=False))  # tied weights under each name
        unknown = sorted(set(state) - set(params))
        if unknown:
            raise ValueError(f"server {self.name}: weights {unknown[:5]} are not parameters of the model")
        given = {id(params[n]) for n in state}
        missing = sorted(n for n, p in params.items() if id(p) not in given)
        if missing:
            raise ValueError(f"server {self.name}: weight sync left out {missing[:5]}")
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t)
        self.version = -1 if version is None else int(version)
        return len(state)

    def load_adapter(self, peft_config: dict, state: dict, version: int | None) -> int:
        """A LoRA adapter's weights (PEFT's state-dict names) on the base `load_weights` holds;
        the first call wraps the model in PEFT with the actor's adapter config."""
        from dataclasses import fields

        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

        if not hasattr(self.runner.model, "peft_config"):
            known = {f.name for f in fields(LoraConfig)}
            cfg = LoraConfig(**{k: v for k, v in peft_config.items() if k in known})
            self.runner.model = get_peft_model(self.runner.model, cfg).eval()
        res = set_peft_model_state_dict(self.runner.model, state)
        if res.unexpected_keys:
            raise ValueError(f"server {self.name}: adapter weights {res.unexpected_keys[:5]} match no LoRA module")
        self.version = -1 if version is None else int(version)
        return len(state)

    async def generate(self, prompt_ids: list[int], sampling_params: dict, request_id: str,
                       image_data=None, video_data=None, **kwargs) -> TokenOutput:
        params = dict(sampling_params)
        self.runner.max_new_tokens = params["max_tokens"]
        comp = self.runner.generate_batch([list(prompt_ids)], params["temperature"])[0]
        self.log.append({"prompt_ids": list(prompt_ids), "sampling_params": params, "version": self.version,
                         "token_ids": comp.token_ids, "log_probs": comp.logprobs})
        return TokenOutput(token_ids=comp.token_ids, log_probs=comp.logprobs if params.get("logprobs") else None,
                           stop_reason="completed",
                           extra_fields={"global_steps": self.version, "server": self.name})

    def calls(self) -> list[dict]:
        return self.log

    def weights(self) -> dict:
        return {n: t.detach().clone() for n, t in self.runner.model.state_dict().items()}

    def weights_version(self) -> int:
        return self.version

    # verl's replica lifecycle (RolloutReplica.sleep, wake_up, ...): weights and cache stay in memory
    async def sleep(self): pass
    async def wake_up(self): pass
    async def abort_all_requests(self, reject_request: bool = False): pass
    async def resume_generation(self): pass
    async def clear_kv_cache(self): pass
    async def release_kv_cache(self): pass
    async def resume_kv_cache(self): pass
