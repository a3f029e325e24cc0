"""The `cpu` rollout backend in verl's registries (`cpu_platform.activate` registers both classes):
a replica whose server is a `CpuTokenServer`, and the adapter inside each FSDP worker that
receives verl's weight sync.

The GPU path, for comparison: `LLMServerManager` makes one `vLLMReplica` per `tensor_parallel`
ranks of the worker group; each replica starts a vLLM server actor; `CheckpointEngineManager`
(backend `naive`) calls the workers' `update_weights`, where the FSDP engine hands every weight
to the worker's vLLM `ServerAdapter`, which moves it into the server by CUDA IPC. Here the same
call reaches `CpuRolloutAdapter.update_weights`, which sends the weights to its replica's server
through Ray's object store (the one replica-side hook: `CpuTokenServer.load_weights`).
"""
from __future__ import annotations

import ray
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica

SERVER_NAME = "marl_cpu_server_{}"  # one named actor per replica, in the policy's Ray namespace


class CpuReplica(RolloutReplica):
    """One CPU token server per replica (tensor_parallel = 1: each FSDP rank is a replica)."""

    async def launch_servers(self):
        from marl.engine.verl.cpu_server import CpuTokenServer

        if self.world_size != 1:
            raise ValueError("rollout_backend=cpu serves one process per replica: engine.tensor_parallel must be 1")
        name = SERVER_NAME.format(self.replica_rank)
        server = CpuTokenServer.options(name=name).remote(self.model_config.path, name)
        await server.ready.remote()
        self.servers = [server]
        self._server_handle, self._server_address = server, name

    def rollout_worker_use_gpu(self) -> bool:
        return False


class CpuRolloutAdapter(BaseRollout):
    """verl's rollout object inside an FSDP worker: forwards the weights of each sync to the
    worker's replica server, as vLLM's adapter does: whole weights, or with LoRA the base once
    (`base_sync_done=False`) and the adapter's weights on every sync after (`peft_config` set)."""

    def __init__(self, config, model_config, device_mesh, *args, **kwargs):
        super().__init__(config, model_config, device_mesh)
        self.replica_rank = torch.distributed.get_rank() // max(config.tensor_model_parallel_size, 1)

    async def resume(self, tags: list[str]):
        pass  # the server keeps its weights and cache in CPU memory: nothing to bring back

    async def release(self):
        pass

    async def update_weights(self, weights, wire_format: str = "named_tensors", peft_config=None,
                             base_sync_done: bool = True, global_steps=None, **kwargs):
        if wire_format != "named_tensors":
            raise ValueError(f"rollout_backend=cpu takes named tensors, not wire_format={wire_format!r}")
        state = {name: t.detach().to("cpu", torch.float32).clone() for name, t in weights}
        server = ray.get_actor(SERVER_NAME.format(self.replica_rank))
        if peft_config is not None and base_sync_done:
            await server.load_adapter.remote(dict(peft_config), state, global_steps)
        else:  # a LoRA model's base: PEFT names a target module's frozen weight <module>.base_layer.weight
            state = {n.replace(".base_layer.", "."): t for n, t in state.items()}
            await server.load_weights.remote(state, global_steps)
