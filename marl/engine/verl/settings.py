"""`conf/engine/verl.yaml` as a typed record: what `engine=verl` adds to an `EngineSpec`. No verl
import here, so a config is checked (and refused) before Ray or verl load."""
from __future__ import annotations

from dataclasses import dataclass, fields

from marl.checks import Rule

BACKENDS = ("vllm", "cpu")  # cpu: verl's workers on the CPU, CPU token servers (cpu_platform.py)
GPU_DEFAULT = 8  # n_gpus_per_node=null on GPUs: a whole node
# backends verl 0.9.1 has but no install of marl can hold: refused with the reason, not as unknown names
UNINSTALLABLE = {"sglang": "verl 0.9.1's `sglang` extra pins sglang==0.5.12, which requires transformers==5.6.0 "
                           "(verl 0.9.1 excludes 5.6.0; the gpu extra pins 5.9.0) and llguidance<0.8 (vllm 0.24.0 "
                           "needs >=1.7), so no install resolves (`pip install --dry-run verl==0.9.1 sglang==0.5.12` "
                           "fails)"}
PLACEMENTS = ("split",)
ATTENTION = ("sdpa", "flash_attention_2", "eager")
# each field's annotation -> the check of its type (marl.checks.Rule)
TYPES = {"int": Rule(int), "int | None": Rule(int, null=True), "float": Rule(float), "bool": Rule(bool), "str": Rule(str), "str | None": Rule(str, null=True)}


@dataclass(frozen=True)
class VerlSettings:
    ray_address: str | None = None
    nnodes: int = 1
    n_gpus_per_node: int | None = None  # null: 8 GPUs; with rollout_backend=cpu, one worker process per policy
    placement: str = "split"
    rollout_backend: str = "vllm"
    tensor_parallel: int = 1
    gpu_memory_utilization: float = 0.5
    prompt_length: int = 4096
    param_offload: bool = False
    optimizer_offload: bool = False
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = True
    max_tokens_per_gpu: int = 16384
    rollout_workers: int = 4

    def __post_init__(self):
        for f in fields(self):  # types first: a string where a number belongs fails only deep inside verl
            rule, value = TYPES[f.type], getattr(self, f.name)
            if not rule.type_ok(value):
                raise ValueError(f"engine.{f.name}={value!r}; allowed: {rule.allowed()}")
        if self.rollout_backend in UNINSTALLABLE:
            raise ValueError(f"engine.rollout_backend={self.rollout_backend!r} cannot be installed: "
                             f"{UNINSTALLABLE[self.rollout_backend]}; allowed: {', '.join(BACKENDS)}")
        for name, allowed in (("rollout_backend", BACKENDS), ("placement", PLACEMENTS),
                              ("attn_implementation", ATTENTION)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"engine.{name}={getattr(self, name)!r}; allowed: {', '.join(allowed)}")
        for name in ("nnodes", "tensor_parallel", "prompt_length", "max_tokens_per_gpu",
                     "rollout_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"engine.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_gpus_per_node is not None and self.n_gpus_per_node < 1:
            raise ValueError(f"engine.n_gpus_per_node must be >= 1 or null, got {self.n_gpus_per_node}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"engine.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")

    @classmethod
    def from_section(cls, section: dict) -> "VerlSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known - {"name", "max_batch"})
        if unknown:
            raise ValueError(f"unknown engine=verl settings {unknown}; allowed: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in section.items() if k in known})

    @property
    def on_cpu(self) -> bool:
        return self.rollout_backend == "cpu"

    def per_node(self, n_policies: int) -> int:
        """Devices per node: GPUs, or with rollout_backend=cpu worker processes (the FSDP ranks)."""
        if self.n_gpus_per_node is not None:
            return self.n_gpus_per_node
        return n_policies if self.on_cpu else GPU_DEFAULT

    def gpus(self, n_policies: int) -> int:
        return self.nnodes * self.per_node(n_policies)

    def gpus_per_policy(self, n_policies: int) -> tuple[int, int]:
        """(nodes, GPUs per node) of each policy's pool under `split`: whole nodes where there are
        at least as many nodes as policies, else an equal share of every node's GPUs."""
        n = self.per_node(n_policies)
        if n_policies <= self.nnodes:
            if self.nnodes % n_policies:
                raise ValueError(f"engine.nnodes={self.nnodes} does not split evenly over {n_policies} policies")
            nodes, per_node = self.nnodes // n_policies, n
        else:
            if self.nnodes != 1 or n % n_policies:
                raise ValueError(f"{n_policies} policies do not split {self.nnodes} node(s) of "
                                 f"{n} GPUs evenly; use nnodes a multiple of {n_policies}, "
                                 f"or one node whose GPU count it divides")
            nodes, per_node = 1, n // n_policies
        if (nodes * per_node) % self.tensor_parallel:
            raise ValueError(f"each policy gets {nodes * per_node} GPUs, not a multiple of "
                             f"engine.tensor_parallel={self.tensor_parallel}")
        return nodes, per_node
