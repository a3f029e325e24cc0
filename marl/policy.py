"""Policies: a model, its tokenizer, optimizer, schedule and generate client; and the routing of
roles to policies.

- `shared`: one policy plays every role;
- `per_role`: one policy (model and optimizer) per role of the training harness. A role the
  training harness lacks (evaluating in another harness) is played by the policy of the
  training harness's last role, the one whose action advances the task.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup
from transformers import get_constant_schedule_with_warmup

from marl.engine.local import BatchingClient
from marl.tiny import build_or_load, encode_pair

POLICY_KINDS = ("shared", "per_role")


@dataclass
class Policy:
    name: str
    model: Any
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    client: BatchingClient
    chat: bool  # prompts go through the tokenizer's chat template
    ref_model: Any = None  # frozen copy of the starting weights, only when the KL term is on

    def encode(self, prompt: str) -> list[int]:
        if self.chat:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True,
                enable_thinking=False, return_dict=False)
        return encode_pair(self.tokenizer, prompt, "")[0]


def load_base(model_cfg, harnesses, task_spec: dict, cache_dir: str, seed: int, log=print):
    """(model, tokenizer, chat) for `model=tiny` (built and cached) or any local/hub causal LM.
    task_spec: the env and harness settings the tiny model's data depends on (its cache key)."""
    if model_cfg.get("path"):
        tok = AutoTokenizer.from_pretrained(model_cfg.path)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        dtype = getattr(torch, model_cfg.get("dtype", "float32"))
        model = AutoModelForCausalLM.from_pretrained(model_cfg.path, dtype=dtype)
        return model, tok, tok.chat_template is not None
    if model_cfg.name != "tiny":
        raise ValueError(f"model {model_cfg.name!r} needs model.path (a local HF directory or hub id)")
    spec = {"task": task_spec, "harnesses": sorted(h.name for h in harnesses), "seed": seed,
            "model": OmegaConf.to_container(model_cfg.arch), "sft": OmegaConf.to_container(model_cfg.sft)}
    model, tok, _ = build_or_load(harnesses, spec, cache_dir, log=log)
    return model, tok, False


def make_policy(name: str, model, tok, chat: bool, train_cfg, algo_cfg, max_new_tokens: int,
                max_batch: int, device: str) -> Policy:
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, betas=(0.9, 0.99),
                            weight_decay=train_cfg.weight_decay)
    if train_cfg.schedule == "cosine":
        sched = get_cosine_schedule_with_warmup(opt, train_cfg.warmup_steps, train_cfg.steps)
    elif train_cfg.schedule == "constant":
        sched = get_constant_schedule_with_warmup(opt, train_cfg.warmup_steps)
    else:
        raise ValueError(f"unknown train.schedule {train_cfg.schedule!r}; allowed: cosine, constant")
    ref = None
    if algo_cfg.kl_coef > 0:
        ref = copy.deepcopy(model).eval().requires_grad_(False)
    client = BatchingClient(model, tok, max_new_tokens=max_new_tokens, max_batch=max_batch)
    return Policy(name, model, tok, opt, sched, client, chat, ref)


class PolicySet:
    def __init__(self, kind: str, train_roles: list[str], base, train_cfg, algo_cfg, model_cfg,
                 engine_cfg, device: str):
        if kind not in POLICY_KINDS:
            raise ValueError(f"unknown policy {kind!r}; allowed: {', '.join(POLICY_KINDS)}")
        model, tok, chat = base
        names = ["shared"] if kind == "shared" else list(train_roles)
        self.kind, self.train_roles = kind, list(train_roles)
        self.policies: dict[str, Policy] = {}
        for i, n in enumerate(names):  # per_role: independent copies of the same warm start
            m = model if i == 0 else copy.deepcopy(model)
            self.policies[n] = make_policy(n, m, tok, chat, train_cfg, algo_cfg, model_cfg.max_new_tokens,
                                           engine_cfg.max_batch, device)

    def role_policy(self, role_names: list[str]) -> dict[str, str]:
        if self.kind == "shared":
            return {r: "shared" for r in role_names}
        fallback = self.train_roles[-1]
        return {r: r if r in self.policies else fallback for r in role_names}

    def clients(self):
        return {n: p.client for n, p in self.policies.items()}

    def encoders(self):
        return {n: p.encode for n, p in self.policies.items()}


def task_settings(cfg):
    """(task, env kwargs, harness kwargs) of a run config: its `env` and `harness` groups less
    their names."""
    import envs

    env_kw = {k: v for k, v in OmegaConf.to_container(cfg.env, resolve=True).items() if k != "name"}
    h_kw = {k: v for k, v in OmegaConf.to_container(cfg.harness, resolve=True).items() if k != "name"}
    return envs.make(cfg.env.name, **env_kw), env_kw, h_kw


def build_run(cfg, log=print):
    """(task, harness kwargs, PolicySet) of a run config, as training builds them. The tiny model
    learns every harness format of the task, whatever the run evaluates, so one cached warm start
    serves all runs on the task."""
    from roles import harness_names, make_harness

    task, env_kw, h_kw = task_settings(cfg)
    base = load_base(cfg.model, [make_harness(task, n, **h_kw) for n in harness_names(task.name)],
                     {"env": env_kw, "harness": h_kw}, cfg.cache_dir, cfg.model.get("seed", 0), log=log)
    train_roles = make_harness(task, cfg.harness.name, **h_kw).role_names
    pset = PolicySet(cfg.policy.name, train_roles, base, cfg.train, cfg.algo, cfg.model, cfg.engine, cfg.device)
    return task, h_kw, pset
