"""Typed settings that cross the trainer/engine boundary, each built once from the run's settings
(marl.config, which reads Hydra at the entry points). An engine reads these, never a Hydra section."""
from __future__ import annotations

from dataclasses import dataclass

OLD_LOGPROB_MODES = ("auto", "recompute")  # see marl.engine.local.update.update_policy
SCHEDULES = ("cosine", "constant")
POLICY_KINDS = ("shared", "per_role", "lora")
# algo.kl_type: verl's KL estimators (core_algos.kl_penalty; "full" is not implemented there), each
# also with a "+" (its k2 gradient by a straight-through estimator)
KL_TYPES = tuple(t + plus for plus in ("", "+") for t in ("low_var_kl", "k3", "kl", "k1", "abs", "mse", "k2"))


@dataclass(frozen=True)
class UpdateSpec:
    """One policy update: PPO epochs over the samples in mini-batches (one optimizer step each)
    split into micro-batches (gradient accumulation), clipped ratio, optional KL and entropy."""

    clip: float = 0.2
    ppo_epochs: int = 1
    mini_batch: int = 4096
    micro_batch: int = 256
    grad_clip: float = 1.0
    old_logprob: str = "auto"  # auto: on-policy updates reuse the training forward's log-probs | recompute
    entropy_coef: float = 0.0
    kl_coef: float = 0.0
    kl_type: str = "low_var_kl"

    def __post_init__(self):
        if self.old_logprob not in OLD_LOGPROB_MODES:
            raise ValueError(f"train.old_logprob={self.old_logprob!r}; allowed: {', '.join(OLD_LOGPROB_MODES)}")
        if min(self.ppo_epochs, self.mini_batch, self.micro_batch) < 1:
            raise ValueError(f"train.ppo_epochs, mini_batch and micro_batch must be >= 1; got "
                             f"{self.ppo_epochs}, {self.mini_batch}, {self.micro_batch}")


@dataclass(frozen=True)
class OptimSpec:
    """AdamW with a warm-up schedule, one per policy; `total_steps` = the run's training steps."""

    lr: float
    weight_decay: float
    schedule: str
    warmup_steps: int
    total_steps: int
    betas: tuple[float, float] = (0.9, 0.99)  # AdamW's, on every engine

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown train.schedule {self.schedule!r}; allowed: {', '.join(SCHEDULES)}")


@dataclass(frozen=True)
class LoraSpec:
    """One PEFT LoRA adapter per policy on a frozen shared base (conf/policy/lora.yaml)."""

    rank: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]


@dataclass(frozen=True)
class EngineSpec:
    """What an engine builds: the policies (ids, kind), the model they start from, where they run
    and how they generate and train."""

    name: str                     # engine.name: the registry key
    kind: str                     # shared | per_role | lora
    policy_ids: tuple[str, ...]   # "shared", or the training harness's roles
    model_path: str               # a local HF directory (the built tiny model's cache, or model.path)
    dtype: str
    device: str
    max_new_tokens: int
    max_batch: int                # most sequences in one generate call; 0: the engine's default
    optim: OptimSpec
    reference: bool               # keep a KL reference (algo.kl_coef > 0)
    seed: int                     # draws an engine makes at build time (LoRA initialisation)
    lora: LoraSpec | None = None
    update: UpdateSpec | None = None  # for engines that configure their trainers at build time (verl)
    settings: object = None           # the engine's own typed settings (Engine.read_settings)

    def __post_init__(self):
        if self.kind not in POLICY_KINDS:
            raise ValueError(f"unknown policy {self.kind!r}; allowed: {', '.join(POLICY_KINDS)}")
        if (self.kind == "lora") != (self.lora is not None):
            raise ValueError("policy=lora needs its LoRA settings (conf/policy/lora.yaml), and only it has them")
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int) or self.max_batch < 0:
            raise ValueError(f"engine.max_batch must be an integer >= 1, or 0 for the engine's default; "
                             f"got {self.max_batch!r}")
