"""marl's settings -> verl's trainer config, in one function (`verl_config`).

verl's own default (`verl/trainer/config/ppo_trainer.yaml`, composed by Hydra as `main_ppo` does)
is the base; only what marl decides is set on it, so every other verl default stays verl's.
verl turns the sections into its dataclasses (`omega_conf_to_dataclass`) inside its workers;
`tests/marl/test_verl_config.py` converts them too, with no worker.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

from omegaconf import DictConfig, OmegaConf, open_dict

from marl.engine.spec import EngineSpec, LoraSpec
from marl.engine.verl.settings import VerlSettings

DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}  # model.dtype -> verl's precision names


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


def verl_config(spec: EngineSpec, settings: VerlSettings, nodes: int, gpus_per_node: int,
                lora_init: str | None = None) -> DictConfig:
    """verl's config for one policy of `spec` on a pool of `nodes` x `gpus_per_node` GPUs (worker
    processes with rollout_backend=cpu). `lora_init`: the directory of the policy's initial LoRA
    adapter (marl's seeded initialisation, `marl.engine.verl.lora_init`), which verl loads instead
    of drawing its own from an unseeded generator."""
    if spec.update is None:
        raise ValueError("engine=verl configures its workers at build time: EngineSpec.update is needed")
    if spec.dtype not in DTYPES:
        raise ValueError(f"model.dtype={spec.dtype!r}; engine=verl allows {', '.join(DTYPES)}")
    longest = settings.prompt_length + spec.max_new_tokens
    if settings.max_tokens_per_gpu < longest:
        raise ValueError(f"engine.max_tokens_per_gpu={settings.max_tokens_per_gpu} is below the longest sequence, "
                         f"engine.prompt_length + model.max_new_tokens = {longest}")
    cfg = default_config()
    u, o, s = spec.update, spec.optim, settings
    arr = cfg.actor_rollout_ref

    m = arr.model
    m.path = spec.model_path
    m.override_config = {"attn_implementation": s.attn_implementation}
    # packing rows into one sequence without a mask is right only under flash-attn's varlen kernels
    m.use_remove_padding = s.attn_implementation == "flash_attention_2"
    m.enable_gradient_checkpointing = s.gradient_checkpointing
    if spec.lora is not None:  # verl's FSDP engine reads model.lora_rank (not model.lora.rank)
        m.lora_rank, m.lora_alpha = spec.lora.rank, spec.lora.alpha
        m.target_modules = list(spec.lora.target_modules)
        if lora_init is None:
            raise ValueError("policy=lora under engine=verl starts from marl's seeded adapter: lora_init is needed")
        m.lora_adapter_path = lora_init

    act = arr.actor
    # FSDP2 on GPUs as on the CPU (FSDP1 refuses CPU parameters): the CPU tests run the GPU's code
    act.strategy = arr.ref.strategy = "fsdp2"
    act.optim.lr, act.optim.weight_decay, act.optim.clip_grad = o.lr, o.weight_decay, u.grad_clip
    act.optim.betas = list(o.betas)  # as engine=local's AdamW (verl's default is (0.9, 0.999))
    act.optim.lr_warmup_steps, act.optim.lr_scheduler_type = o.warmup_steps, o.schedule
    act.optim.total_training_steps = o.total_steps
    # marl's rows are samples (one prompt, one response each): rollout.n = 1, so verl's
    # mini-batch "prompts" are samples; each update call passes its own row count (engine.update)
    act.ppo_mini_batch_size = u.mini_batch
    # micro-batches by token budget (verl's dynamic batch size): with fixed row counts verl asserts
    # that every GPU's rows divide evenly, which a step's varying sample count does not promise;
    # the log-prob passes of the actor and reference follow these two keys by interpolation
    act.use_dynamic_bsz, act.ppo_max_token_len_per_gpu = True, s.max_tokens_per_gpu
    act.ppo_epochs, act.shuffle = u.ppo_epochs, False
    act.clip_ratio = act.clip_ratio_low = act.clip_ratio_high = u.clip
    act.loss_agg_mode = "token-mean"  # as marl.loss: padding rows (mask 0) add nothing, dilute nothing
    act.entropy_coeff = u.entropy_coef
    act.use_kl_loss, act.kl_loss_coef, act.kl_loss_type = u.kl_coef > 0, u.kl_coef, u.kl_type
    act.fsdp_config.param_offload, act.fsdp_config.optimizer_offload = s.param_offload, s.optimizer_offload
    # compute in model.dtype with fp32 master weights, optimizer and gradient reduction (verl's
    # default for FSDP); the frozen reference is stored in model.dtype
    with open_dict(act.fsdp_config):
        act.fsdp_config.mixed_precision = {"param_dtype": DTYPES[spec.dtype], "reduce_dtype": "fp32",
                                           "buffer_dtype": "fp32"}
    act.fsdp_config.model_dtype = "fp32"
    arr.ref.fsdp_config.model_dtype = DTYPES[spec.dtype]

    r = arr.rollout
    r.name, r.mode, r.n = s.rollout_backend, "async", 1
    r.prompt_length, r.response_length = s.prompt_length, spec.max_new_tokens
    r.gpu_memory_utilization, r.tensor_model_parallel_size = s.gpu_memory_utilization, s.tensor_parallel
    r.max_model_len = longest  # the KV cache sized for marl's sequences, not the model's whole context
    r.calculate_log_probs, r.logprobs_mode = True, "processed_logprobs"  # log p at the sampling temperature
    r.nnodes, r.n_gpus_per_node = nodes, gpus_per_node
    r.dtype = spec.dtype  # vLLM / SGLang take torch's names

    cfg.trainer.nnodes, cfg.trainer.n_gpus_per_node = nodes, gpus_per_node
    cfg.trainer.device = "cpu" if settings.on_cpu else "cuda"
    cfg.trainer.logger = []  # marl logs (marl.logger); verl's trackers stay off
    cfg.algorithm.adv_estimator = "at_grpo"  # marl.advantage computes it; recorded for verl's own checks
    cfg.algorithm.norm_adv_by_std_in_grpo = True
    OmegaConf.resolve(cfg)  # as main_ppo does before handing sections to workers
    return cfg
