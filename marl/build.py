"""Build what a run needs from its config: the task, harness settings, the model to start from
(the tiny model is built and cached) and the engine holding the policies. `marl.train`,
`marl.evaluate`, the experiments and the benchmarks all build through `build_run`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from marl.engine import Engine, EngineSpec, LoraSpec, OptimSpec, UpdateSpec, engine_class, make_engine
from marl.routing import Routing, policy_ids


def task_settings(cfg):
    """(task, env kwargs, harness kwargs) of a run config: its `env` and `harness` groups less
    their names."""
    import envs

    env_kw = {k: v for k, v in OmegaConf.to_container(cfg.env, resolve=True).items() if k != "name"}
    h_kw = {k: v for k, v in OmegaConf.to_container(cfg.harness, resolve=True).items() if k != "name"}
    return envs.make(cfg.env.name, **env_kw), env_kw, h_kw


def check_model_and_device(cfg) -> None:
    """Refuse a model path or device that would only fail deep inside transformers or torch."""
    import torch

    path = cfg.model.get("path")
    if path:
        p = Path(path).expanduser()
        local = p.is_absolute() or str(path).startswith((".", "~")) or p.exists()
        if local and not (p / "config.json").exists():
            what = "does not exist" if not p.exists() else "holds no config.json"
            raise ValueError(f"model.path={path}: {what}. Pass a local Hugging Face model directory "
                             "(config.json, weights and tokenizer files, e.g. from `huggingface-cli download`), "
                             "a hub id already in the local cache (e.g. Qwen/Qwen3-1.7B), or model=tiny")
    elif cfg.model.name != "tiny":
        raise ValueError(f"model={cfg.model.name} needs model.path (a local HF directory or hub id)")
    dev = str(cfg.device)
    if dev != "cpu" and not dev.startswith("cuda"):
        raise ValueError(f"device={dev!r}; allowed: cpu, cuda, cuda:<index>")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={dev}, but torch {torch.__version__} sees no CUDA GPU "
                         f"(built with CUDA: {torch.version.cuda or 'no'}). Run with device=cpu, or on a "
                         "machine with an NVIDIA GPU and a CUDA build of torch")


def model_path(cfg, task, h_kw: dict, env_kw: dict, log=print) -> str:
    """The directory the policies start from: `model.path`, or the tiny model built (or loaded
    from `cache_dir`) for this task. The tiny model learns every harness format of the task,
    whatever the run evaluates, so one cached warm start serves all runs on the task."""
    if cfg.model.get("path"):
        return str(cfg.model.path)
    from marl.tiny import ensure_built
    from roles import harness_names, make_harness

    spec = {"task": {"env": env_kw, "harness": h_kw}, "harnesses": harness_names(task.name),
            "seed": cfg.model.get("seed", 0), "model": OmegaConf.to_container(cfg.model.arch, resolve=True),
            "sft": OmegaConf.to_container(cfg.model.sft, resolve=True)}
    harnesses = [make_harness(task, n, **h_kw) for n in harness_names(task.name)]
    return str(ensure_built(harnesses, spec, cfg.cache_dir, log=log))


def engine_settings(cfg):
    """The engine's typed settings (None for `local`), refused here when unknown or invalid."""
    return engine_class(cfg.engine.name).read_settings(OmegaConf.to_container(cfg.engine, resolve=True))


def check_engine(cfg, n_policies: int) -> None:
    """Refuse an engine this machine cannot run (engine=verl without GPUs) before any build."""
    engine_class(cfg.engine.name).check_environment(engine_settings(cfg), n_policies)


def engine_spec(cfg, path: str, train_roles: list[str]) -> EngineSpec:
    t, pol = cfg.train, cfg.policy
    lora = None
    if pol.name == "lora":
        lora = LoraSpec(rank=pol.rank, alpha=pol.alpha, dropout=pol.dropout, target_modules=tuple(pol.target_modules))
    lr = pol.get("lr") or t.lr  # a LoRA adapter may want its own learning rate
    return EngineSpec(name=cfg.engine.name, kind=pol.name, policy_ids=policy_ids(pol.name, train_roles),
                      model_path=path, dtype=cfg.model.get("dtype", "float32"), device=str(cfg.device),
                      max_new_tokens=cfg.model.max_new_tokens, max_batch=cfg.engine.get("max_batch", 0),
                      optim=OptimSpec(lr=lr, weight_decay=t.weight_decay, schedule=t.schedule,
                                      warmup_steps=t.warmup_steps, total_steps=t.steps),
                      reference=cfg.algo.kl_coef > 0, seed=cfg.seed, lora=lora,
                      update=UpdateSpec.from_config(cfg), settings=engine_settings(cfg))


@dataclass
class BuiltRun:
    task: object
    h_kw: dict
    train_roles: list[str]
    engine: Engine

    def routing(self, role_names: list[str]) -> Routing:
        """The run's own routing in a harness with these roles."""
        return Routing.default(self.engine.spec.kind, self.train_roles, role_names)


def build_run(cfg, log=print) -> BuiltRun:
    from roles import make_harness

    check_model_and_device(cfg)
    task, env_kw, h_kw = task_settings(cfg)
    train_roles = make_harness(task, cfg.harness.name, **h_kw).role_names
    check_engine(cfg, len(policy_ids(cfg.policy.name, train_roles)))
    path = model_path(cfg, task, h_kw, env_kw, log=log)
    return BuiltRun(task, h_kw, train_roles, make_engine(engine_spec(cfg, path, train_roles)))
