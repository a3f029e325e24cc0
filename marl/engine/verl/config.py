"""marl's settings -> verl's trainer config, in one function (`verl_config`).

verl's own default (`verl/trainer/config/ppo_trainer.yaml`, composed by Hydra as `main_ppo` does)
is the base; only what marl decides is set on it, so every other verl default stays verl's.
verl turns the sections into its dataclasses (`omega_conf_to_dataclass`) inside its workers;
`tests/marl/engine_verl/test_config.py` converts them here too.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

from omegaconf import DictConfig, OmegaConf

from marl.engine.spec import EngineSpec
from marl.engine.verl.settings import VerlSettings

DTYPES = {"bfloat16": "bfloat16", "float16": "float16", "float32": "fp32"}


@contextmanager
def _hydra_of_verl():
    """Compose verl's config even inside a running Hydra app (`marl.train`): Hydra's global
    instance is set aside and put back."""
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    outer = gh.hydra
    gh.clear()
    try:
        yield
    finally:
        GlobalHydra.instance().clear()
        if outer is not None:
            GlobalHydra.instance().initialize(outer)


def default_config() -> DictConfig:
    """verl's full default trainer config, as its `main_ppo` composes it."""
    import verl
    from hydra import compose, initialize_config_dir

    with _hydra_of_verl(), initialize_config_dir(
            config_dir=os.path.join(os.path.dirname(verl.__file__), "trainer", "config"), version_base=None):
        return compose(config_name="ppo_trainer")


def verl_config(spec: EngineSpec, settings: VerlSettings, nodes: int, gpus_per_node: int) -> DictConfig:
    """verl's config for one policy of `spec` on a pool of `nodes` x `gpus_per_node` GPUs."""
    if spec.update is None:
        raise ValueError("engine=verl configures its workers at build time: EngineSpec.update is needed")
    if spec.dtype not in DTYPES:
        raise ValueError(f"model.dtype={spec.dtype!r}; engine=verl allows {', '.join(DTYPES)}")
    cfg = default_config()
    u, o, s = spec.update, spec.optim, settings
    arr = cfg.actor_rollout_ref

    m = arr.model
    m.path = spec.model_path
    m.override_config = {"attn_implementation": s.attn_implementation}
    m.enable_gradient_checkpointing = s.gradient_checkpointing
    if spec.lora is not None:  # verl's FSDP engine reads model.lora_rank (not model.lora.rank)
        m.lora_rank, m.lora_alpha = spec.lora.rank, spec.lora.alpha
        m.target_modules = list(spec.lora.target_modules)

    act = arr.actor
    act.strategy = "fsdp"
    act.optim.lr, act.optim.weight_decay, act.optim.clip_grad = o.lr, o.weight_decay, u.grad_clip
    act.optim.lr_warmup_steps, act.optim.lr_scheduler_type = o.warmup_steps, o.schedule
    act.optim.total_training_steps = o.total_steps
    # marl's rows are samples (one prompt, one response each): rollout.n = 1, so verl's
    # mini-batch "prompts" are samples; each update call passes its own row count (engine.update)
    act.ppo_mini_batch_size = u.mini_batch
    act.ppo_micro_batch_size_per_gpu = s.micro_batch_per_gpu
    act.ppo_epochs, act.shuffle = u.ppo_epochs, False
    act.clip_ratio = act.clip_ratio_low = act.clip_ratio_high = u.clip
    act.loss_agg_mode = "token-mean"  # as marl.loss: padding rows (mask 0) add nothing, dilute nothing
    act.entropy_coeff = u.entropy_coef
    act.use_kl_loss, act.kl_loss_coef, act.kl_loss_type = u.kl_coef > 0, u.kl_coef, u.kl_type
    act.fsdp_config.param_offload, act.fsdp_config.optimizer_offload = s.param_offload, s.optimizer_offload
    act.fsdp_config.dtype = act.fsdp_config.model_dtype = DTYPES[spec.dtype]
    arr.ref.log_prob_micro_batch_size_per_gpu = s.log_prob_micro_batch_per_gpu

    r = arr.rollout
    r.name, r.mode, r.n = s.rollout_backend, "async", 1
    r.prompt_length, r.response_length = s.prompt_length, spec.max_new_tokens
    r.gpu_memory_utilization, r.tensor_model_parallel_size = s.gpu_memory_utilization, s.tensor_parallel
    r.log_prob_micro_batch_size_per_gpu = s.log_prob_micro_batch_per_gpu
    r.calculate_log_probs, r.logprobs_mode = True, "processed_logprobs"  # log p at the sampling temperature
    r.nnodes, r.n_gpus_per_node = nodes, gpus_per_node
    r.dtype = DTYPES[spec.dtype] if spec.dtype != "float32" else "float32"

    cfg.trainer.nnodes, cfg.trainer.n_gpus_per_node, cfg.trainer.device = nodes, gpus_per_node, "cuda"
    cfg.trainer.logger = []  # marl logs (marl.logger); verl's trackers stay off
    cfg.algorithm.adv_estimator = "at_grpo"  # marl.advantage computes it; recorded for verl's own checks
    cfg.algorithm.norm_adv_by_std_in_grpo = True
    OmegaConf.resolve(cfg)  # as main_ppo does before handing sections to workers
    return cfg
