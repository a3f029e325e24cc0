"""engine=verl's configuration: conf/engine/verl.yaml -> typed settings -> verl's own config
dataclasses (one function, converted here by verl's `omega_conf_to_dataclass`), the refusal on a
machine without GPUs, and canaries pinning every verl signature marl.engine.verl relies on, so a
verl upgrade fails here, in one place."""
from __future__ import annotations

import inspect
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from marl.build import check_engine
from marl.config import run_settings
from marl.engine import EngineSpec, LoraSpec, OptimSpec, UpdateSpec, engine_class
from marl.engine.verl.config import verl_config
from marl.engine.verl.settings import VerlSettings

ROOT = Path(__file__).resolve().parents[2]


def run_config(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose(config_name="config", overrides=["+exp=planning", "engine=verl", *overrides])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tokenizer and config on disk: verl's HFModelConfig loads both when it is built."""
    from transformers import Qwen3Config

    from marl.tiny import build_tokenizer
    tok = build_tokenizer(["go left right up down 0 1 2 3 4 5 6 7 8 9"] * 4)
    d = tmp_path_factory.mktemp("tiny-config")
    tok.save_pretrained(d)
    Qwen3Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                head_dim=16, intermediate_size=64, architectures=["Qwen3ForCausalLM"]).save_pretrained(d)
    return str(d)


def spec_for(model_dir, lora=None, **update):
    u = UpdateSpec(clip=0.25, ppo_epochs=2, mini_batch=64, micro_batch=8, grad_clip=0.5, kl_coef=0.01, **update)
    return EngineSpec(name="verl", kind="lora" if lora else "shared", policy_ids=("shared",) if not lora else ("tool", "plan"),
                      model_path=model_dir, dtype="bfloat16", device="cuda", max_new_tokens=1024, max_batch=0,
                      optim=OptimSpec(lr=5e-6, weight_decay=0.0, schedule="cosine", warmup_steps=10, total_steps=200),
                      reference=True, seed=0, lora=lora, update=u, settings=VerlSettings())


def test_yaml_is_the_typed_settings_and_unknown_keys_are_refused():
    cfg = run_config()
    s = engine_class("verl").read_settings(dict(cfg.engine))
    assert s == VerlSettings()  # conf/engine/verl.yaml holds the defaults, and only keys the record knows
    with pytest.raises(ValueError, match=r"unknown engine=verl settings \['gpu_count'\]; allowed: .*n_gpus_per_node"):
        VerlSettings.from_section({"name": "verl", "gpu_count": 8})
    for bad, msg in [({"rollout_backend": "trt"}, "allowed: vllm"), ({"tensor_parallel": 0}, ">= 1"),
                     ({"gpu_memory_utilization": 1.5}, r"\(0, 1\]"), ({"placement": "colocate"}, "allowed: split"),
                     # types, before verl would trip over them
                     ({"nnodes": "abc"}, "engine.nnodes='abc'; allowed: an integer$"),
                     ({"param_offload": 1}, "engine.param_offload=1; allowed: true or false$"),
                     ({"gpu_memory_utilization": float("nan")}, "allowed: a finite number$"),
                     ({"ray_address": 5}, "engine.ray_address=5; allowed: a non-empty string, or null$")]:
        with pytest.raises(ValueError, match=msg):
            VerlSettings(**bad)


def test_sglang_is_refused_with_the_reason_before_any_work():
    """verl 0.9.1's own `sglang` extra does not resolve (sglang 0.5.12 pins transformers 5.6.0, which
    verl excludes): no install exists, so the backend is refused when the settings are read."""
    with pytest.raises(ValueError, match=r"engine.rollout_backend='sglang' cannot be installed: .*sglang==0\.5\.12.*"
                                         r"transformers==5\.6\.0.*; allowed: vllm"):
        run_settings(run_config("engine.rollout_backend=sglang"))
    # the reason, against verl's installed metadata (sglang 0.5.12's own transformers==5.6.0 pin is
    # on PyPI: `pip install --dry-run verl==0.9.1 sglang==0.5.12` reports that conflict)
    import importlib.metadata as md

    from marl.engine.verl.settings import UNINSTALLABLE
    reqs = [r.replace(" ", "") for r in md.requires("verl")]
    assert 'sglang==0.5.12;extra=="sglang"' in reqs and "sglang==0.5.12" in UNINSTALLABLE["sglang"]
    base_transformers = next(r for r in reqs if r.startswith("transformers") and "extra" not in r)
    assert "!=5.6.0" in base_transformers


def test_lora_starts_from_marls_seeded_adapter_with_its_dropout(model_dir, tmp_path):
    """verl 0.9.1 would draw its adapters unseeded and build them without dropout: marl writes each
    policy's adapter (engine=local's initialisation) and verl's config loads it, dropout included."""
    import json

    from safetensors.torch import load_file

    from marl.engine.tokens import load_tokenizer
    from marl.engine.verl.lora_init import write_initial_adapters
    from test_engine import tiny_model
    lora = LoraSpec(rank=4, alpha=8, dropout=0.05, target_modules=("q_proj", "v_proj"))
    spec = replace(spec_for(model_dir, lora=lora), dtype="float32")
    tok = load_tokenizer(model_dir)[0]
    tiny_model(tok).save_pretrained(tmp_path / "full")  # this module's model_dir holds no weights
    tok.save_pretrained(tmp_path / "full")
    spec = replace(spec, model_path=str(tmp_path / "full"))
    a, b = write_initial_adapters(spec, str(tmp_path / "a")), write_initial_adapters(spec, str(tmp_path / "b"))
    assert sorted(a) == ["plan", "tool"]
    for pid in a:
        conf = json.loads((Path(a[pid]) / "adapter_config.json").read_text())
        assert (conf["r"], conf["lora_alpha"], conf["lora_dropout"]) == (4, 8, 0.05)
        wa, wb = (load_file(Path(d[pid]) / "adapter_model.safetensors") for d in (a, b))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)  # seeded: the same twice
    assert not torch.equal(*(next(v for k, v in load_file(Path(a[p]) / "adapter_model.safetensors").items()
                                  if "lora_A" in k) for p in ("tool", "plan")))  # one draw per policy, as locally
    cfg = verl_config(spec, VerlSettings(), 1, 4, lora_init=a["tool"])
    assert cfg.actor_rollout_ref.model.lora_adapter_path == a["tool"]
    with pytest.raises(ValueError, match="lora_init is needed"):
        verl_config(spec, VerlSettings(), 1, 4)

def test_gpu_split_over_policies():
    assert VerlSettings(nnodes=1, n_gpus_per_node=8).gpus_per_policy(2) == (1, 4)
    assert VerlSettings(nnodes=4, n_gpus_per_node=8).gpus_per_policy(2) == (2, 8)
    assert VerlSettings(nnodes=1, n_gpus_per_node=8, tensor_parallel=2).gpus_per_policy(1) == (1, 8)
    with pytest.raises(ValueError, match="evenly"):
        VerlSettings(nnodes=1, n_gpus_per_node=6).gpus_per_policy(4)
    with pytest.raises(ValueError, match="tensor_parallel=4"):
        VerlSettings(nnodes=1, n_gpus_per_node=4, tensor_parallel=4).gpus_per_policy(2)


def test_conversion_into_verls_dataclasses(model_dir):
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.config import FSDPActorConfig, HFModelConfig, RolloutConfig

    cfg = verl_config(spec_for(model_dir), VerlSettings(attn_implementation="sdpa", max_tokens_per_gpu=6000), 1, 4)
    arr = cfg.actor_rollout_ref
    actor = omega_conf_to_dataclass(arr.actor)
    rollout = omega_conf_to_dataclass(arr.rollout)
    model = omega_conf_to_dataclass(arr.model)
    assert isinstance(actor, FSDPActorConfig) and isinstance(rollout, RolloutConfig) and isinstance(model, HFModelConfig)
    assert (actor.clip_ratio, actor.clip_ratio_low, actor.clip_ratio_high) == (0.25, 0.25, 0.25)
    assert (actor.ppo_epochs, actor.ppo_mini_batch_size) == (2, 64)
    # micro-batches by token budget, for training and both log-prob passes (verl's interpolations)
    assert (actor.use_dynamic_bsz, actor.ppo_max_token_len_per_gpu) == (True, 6000)
    assert (rollout.log_prob_use_dynamic_bsz, rollout.log_prob_max_token_len_per_gpu) == (True, 6000)
    assert (arr.ref.log_prob_use_dynamic_bsz, arr.ref.log_prob_max_token_len_per_gpu) == (True, 6000)
    # bf16 compute on fp32 master weights; the reference stored in bf16
    assert dict(arr.actor.fsdp_config.mixed_precision) == {"param_dtype": "bf16", "reduce_dtype": "fp32",
                                                           "buffer_dtype": "fp32"}
    assert (actor.fsdp_config.model_dtype, arr.ref.fsdp_config.model_dtype, rollout.dtype) == ("fp32", "bf16", "bfloat16")
    assert rollout.max_model_len == 4096 + 1024
    assert (actor.use_kl_loss, actor.kl_loss_coef, actor.kl_loss_type, actor.loss_agg_mode) == (
        True, 0.01, "low_var_kl", "token-mean")
    assert (actor.optim.lr, actor.optim.clip_grad, actor.optim.lr_warmup_steps, actor.optim.lr_scheduler_type,
            actor.optim.total_training_steps) == (5e-6, 0.5, 10, "cosine", 200)
    assert (rollout.name, rollout.n, rollout.response_length, rollout.prompt_length) == ("vllm", 1, 1024, 4096)
    assert (rollout.calculate_log_probs, rollout.logprobs_mode) == (True, "processed_logprobs")
    assert rollout.tensor_model_parallel_size == 1 and rollout.gpu_memory_utilization == 0.5
    assert model.path == model_dir and model.lora_rank == 0
    assert arr.model.override_config.attn_implementation == "sdpa"
    assert model.use_remove_padding is False  # sdpa: padded batches; packing needs flash-attn's varlen kernels
    flash = verl_config(spec_for(model_dir), VerlSettings(attn_implementation="flash_attention_2"), 1, 4)
    assert flash.actor_rollout_ref.model.use_remove_padding is True
    assert (cfg.trainer.nnodes, cfg.trainer.n_gpus_per_node) == (1, 4)
    assert cfg.algorithm.adv_estimator == "at_grpo"


def test_lora_settings_reach_verls_model_config(model_dir):
    lora = LoraSpec(rank=32, alpha=64, dropout=0.0, target_modules=("q_proj", "v_proj"))
    cfg = verl_config(spec_for(model_dir, lora=lora), VerlSettings(), 1, 4, lora_init="/adapters/plan")
    m = cfg.actor_rollout_ref.model
    assert (m.lora_rank, m.lora_alpha, list(m.target_modules)) == (32, 64, ["q_proj", "v_proj"])
    assert m.lora_adapter_path == "/adapters/plan" and not m.lora.merge  # the adapter path, as vLLM takes it


def test_conversion_needs_the_update_settings_and_a_known_dtype(model_dir):
    with pytest.raises(ValueError, match="EngineSpec.update"):
        verl_config(replace(spec_for(model_dir), update=None), VerlSettings(), 1, 1)
    with pytest.raises(ValueError, match="model.dtype='int8'"):
        verl_config(replace(spec_for(model_dir), dtype="int8"), VerlSettings(), 1, 1)
    with pytest.raises(ValueError, match=r"max_tokens_per_gpu=4000 is below .* = 5120"):
        verl_config(spec_for(model_dir), VerlSettings(max_tokens_per_gpu=4000), 1, 1)


def test_refused_without_gpus_before_anything_is_built(tmp_path, monkeypatch):
    """check_engine runs before the model is built; on a machine without CUDA it names engine=local."""
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"engine=verl needs NVIDIA GPUs.*this machine has none.*engine=local"):
        check_engine(run_settings(run_config()), 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match="asks for 8 GPUs; this machine has 2"):
        check_engine(run_settings(run_config()), 1)
    check_engine(run_settings(run_config("engine.n_gpus_per_node=2")), 2)  # fits: nothing raised
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_engine(run_settings(run_config("engine.rollout_backend=cpu")), 2)  # CPU worker processes: no GPU asked


def test_devices_per_node_default_to_a_node_of_gpus_or_one_cpu_worker_per_policy():
    assert VerlSettings().gpus_per_policy(2) == (1, 4)  # n_gpus_per_node=null on GPUs: 8
    assert VerlSettings(rollout_backend="cpu").gpus_per_policy(2) == (1, 1)  # one FSDP process per policy
    assert VerlSettings(rollout_backend="cpu", n_gpus_per_node=4).gpus_per_policy(2) == (1, 2)  # dp 2 each
    with pytest.raises(ValueError, match=r"engine.n_gpus_per_node must be >= 1 or null, got 0"):
        VerlSettings(n_gpus_per_node=0)


@pytest.mark.e2e  # the command in a subprocess; the refusal itself: test_refused_without_gpus_before_anything_is_built
def test_train_command_refuses_engine_verl_without_gpus(tmp_path):
    import os
    out = subprocess.run([sys.executable, "-m", "marl.train", "+exp=planning", "engine=verl", "logger=none",
                          f"hydra.run.dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})  # no GPU visible, on any machine
    assert out.returncode != 0 and "engine=verl needs NVIDIA GPUs" in out.stderr and "engine=local" in out.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run" / "config.yaml").exists()  # nothing built


# --- canaries: the verl 0.9.1 API marl.engine.verl is written against --------------------------

def params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_canary_verl_signatures():
    import verl
    from verl.checkpoint_engine import CheckpointEngineManager
    from verl.protocol import DataProto
    from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine_workers import ActorRolloutRefWorker
    from verl.workers.rollout.llm_server import LLMServerClient, LLMServerManager
    from verl.workers.rollout.replica import TokenOutput
    from verl.workers.rollout.router import GlobalRequestLoadBalancer, get_router_handle
    from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding

    assert verl.__version__ == "0.9.1"
    assert params(LLMServerClient.__init__)[:3] == ["self", "config", "load_balancer_handle"]
    gen = inspect.signature(LLMServerClient.generate).parameters
    assert list(gen)[:2] == ["self", "request_id"] and {"prompt_ids", "sampling_params"} <= set(gen)
    assert {"token_ids", "log_probs", "stop_reason", "extra_fields"} <= set(TokenOutput.model_fields)
    assert {"config", "worker_group", "rollout_resource_pool", "start_rank"} <= set(params(LLMServerManager.__init__))
    assert all(hasattr(LLMServerManager, m) for m in ("create", "get_client", "get_replicas"))
    assert params(get_router_handle)[0] == "servers" and params(GlobalRequestLoadBalancer.acquire_server)[1] == "request_id"
    assert params(ActorRolloutRefWorker.__init__)[:3] == ["self", "config", "role"]
    for m in ("init_model", "compute_log_prob", "compute_ref_log_prob", "update_actor"):
        assert hasattr(ActorRolloutRefWorker, m), m
    assert params(ActorRolloutRefWorker.save_checkpoint)[:4] == ["self", "local_path", "hdfs_path", "global_step"]
    assert params(ActorRolloutRefWorker.load_checkpoint)[:4] == ["self", "local_path", "hdfs_path", "del_local_after_load"]
    assert params(CheckpointEngineManager.__init__)[:4] == ["self", "config", "actor_wg", "replicas"]
    assert all(hasattr(CheckpointEngineManager, m) for m in ("update_weights", "sleep_replicas"))
    assert {"process_on_nodes", "use_gpu", "max_colocate_count", "name_prefix"} <= set(params(RayResourcePool.__init__))
    assert {"resource_pool", "ray_cls_with_init", "device_name"} <= set(params(RayWorkerGroup.__init__)) | {"device_name"}
    assert params(RayClassWithInitArgs.__init__)[:2] == ["self", "cls"]
    assert params(left_right_2_no_padding) == ["data"] and params(no_padding_2_padding) == ["tensor", "data"]
    assert hasattr(tu, "assign_non_tensor") and hasattr(tu, "get") and hasattr(DataProto, "to_tensordict")


def test_canary_verl_config_keys():
    """Every key verl_config sets exists in verl's default config (OmegaConf would add a new key
    silently, and verl would never read it)."""
    from marl.engine.verl.config import default_config
    d = default_config()
    arr = d.actor_rollout_ref
    for sec, keys in {
        arr.model: ["path", "override_config", "enable_gradient_checkpointing", "lora_rank", "lora_alpha", "target_modules",
                    "use_remove_padding"],
        arr.actor: ["strategy", "ppo_mini_batch_size", "use_dynamic_bsz", "ppo_max_token_len_per_gpu", "ppo_epochs", "shuffle",
                    "clip_ratio", "clip_ratio_low", "clip_ratio_high", "loss_agg_mode", "entropy_coeff", "use_kl_loss",
                    "kl_loss_coef", "kl_loss_type"],
        arr.actor.optim: ["lr", "weight_decay", "clip_grad", "lr_warmup_steps", "lr_scheduler_type", "total_training_steps"],
        arr.actor.fsdp_config: ["param_offload", "optimizer_offload", "model_dtype"],  # mixed_precision: added (open_dict)
        arr.ref: ["log_prob_use_dynamic_bsz", "log_prob_max_token_len_per_gpu"],
        arr.ref.fsdp_config: ["model_dtype"],
        arr.rollout: ["name", "mode", "n", "prompt_length", "response_length", "gpu_memory_utilization",
                      "tensor_model_parallel_size", "log_prob_use_dynamic_bsz", "log_prob_max_token_len_per_gpu",
                      "calculate_log_probs", "logprobs_mode", "nnodes", "n_gpus_per_node", "dtype", "max_model_len",
                      "checkpoint_engine"],
        d.trainer: ["nnodes", "n_gpus_per_node", "device", "logger"],
        d.algorithm: ["adv_estimator", "norm_adv_by_std_in_grpo"],
    }.items():
        missing = [k for k in keys if k not in list(sec.keys())]  # `in` is False for a ??? value
        assert not missing, missing


def test_verls_config_composes_inside_a_running_hydra_app():
    """marl.train is a Hydra app: composing verl's config there sets marl's Hydra aside and puts
    it back (a second compose of marl's config still works)."""
    from hydra.core.global_hydra import GlobalHydra

    from marl.engine.verl.config import default_config
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        outer = GlobalHydra.instance().hydra
        verl_cfg = default_config()
        assert "actor_rollout_ref" in verl_cfg
        assert GlobalHydra.instance().hydra is outer
        assert compose(config_name="config", overrides=["+exp=planning"]).engine.name == "local"
