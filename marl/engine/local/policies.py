"""The local engine's policies: what `update` trains and `save`/`load` persist, one class per kind.

- `FullPolicy` (`shared`, `per_role`): a whole model, its AdamW and schedule; the KL reference is
  a frozen copy of the starting weights, made only when the KL term is on.
- `LoraPolicy` (`lora`): one PEFT LoRA adapter on a frozen base shared by every policy; its
  optimizer holds the adapter's parameters only; the KL reference is the base with adapters
  disabled (no copy); checkpoints hold the adapter and its optimizer state only.
"""
from __future__ import annotations

import contextlib
import copy

import torch
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

from marl.engine.spec import LoraSpec, OptimSpec


def optimizer_and_schedule(params: list, spec: OptimSpec):
    opt = torch.optim.AdamW(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    if spec.schedule == "cosine":
        return opt, get_cosine_schedule_with_warmup(opt, spec.warmup_steps, spec.total_steps)
    return opt, get_constant_schedule_with_warmup(opt, spec.warmup_steps)


class FullPolicy:
    def __init__(self, name: str, model, pad_id: int, optim: OptimSpec, reference: bool):
        self.name, self.module, self.pad_id = name, model, pad_id
        self.parameters = list(model.parameters())
        self.optimizer, self.scheduler = optimizer_and_schedule(self.parameters, optim)
        self.ref_model = copy.deepcopy(model).eval().requires_grad_(False) if reference else None

    def activate(self) -> None:
        pass

    @contextlib.contextmanager
    def reference(self):
        yield self.ref_model

    def weights(self) -> dict:
        return self.module.state_dict()

    def load_weights(self, state: dict) -> None:
        self.module.load_state_dict(state)


class LoraPolicy:
    def __init__(self, name: str, peft_model, pad_id: int, optim: OptimSpec, reference: bool):
        self.name, self.module, self.pad_id, self._reference = name, peft_model, pad_id, reference
        self.parameters = [p for n, p in peft_model.named_parameters() if f".{name}." in n and "lora_" in n]
        if not self.parameters:
            raise ValueError(f"LoRA adapter {name!r} has no parameters: do lora.target_modules name modules of the model?")
        self.optimizer, self.scheduler = optimizer_and_schedule(self.parameters, optim)

    def activate(self) -> None:
        """Route forwards through this policy's adapter (and mark only its weights trainable)."""
        self.module.set_adapter(self.name)

    @contextlib.contextmanager
    def reference(self):
        if not self._reference:
            yield None
            return
        with self.module.disable_adapter():
            yield self.module

    def weights(self) -> dict:
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(self.module, adapter_name=self.name)

    def load_weights(self, state: dict) -> None:
        from peft import set_peft_model_state_dict

        res = set_peft_model_state_dict(self.module, state, adapter_name=self.name)
        if res.unexpected_keys:
            raise ValueError(f"adapter {self.name!r}: unexpected keys in checkpoint {res.unexpected_keys[:3]}")


def add_adapters(model, names: tuple[str, ...], spec: LoraSpec, seed: int):
    """A PEFT model with one LoRA adapter per name on `model` (frozen). Adapter initialisation
    draws from a generator seeded by `seed`, not from the run's global RNG stream."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                     target_modules=list(spec.target_modules), bias="none", task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, cfg, adapter_name=names[0])
        for n in names[1:]:
            peft_model.add_adapter(n, cfg)
    return peft_model.eval()
