"""What `marl.config.run_settings` checks in a composed training config before anything is built:
the keys each section may hold, and every setting's type and allowed values, in one table
(SECTIONS). A key no code reads (a misspelling added with `+`, say) is refused, naming the
section's keys; a bad value is refused as `<key>=<value>; allowed: <what>`.

Integers are integers: a float such as `1e3` (which Hydra reads as 1000.0) is refused where an
integer is wanted, and a bool is neither an integer nor a number; a number may be given as an
integer, and must be finite. The `env`, `harness` and `engine=verl` sections hold the options of
the task, the harness family and the engine, checked by their own code (envs.check_options,
roles' Family.check_options with each family's rules of this form, Engine.read_settings);
`per_model` is the source of the model configs' interpolations (conf/model/*.yaml) and
`mismatch` experiments.mismatch's own section.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Callable

from marl.engine.spec import KL_TYPES, OLD_LOGPROB_MODES, POLICY_KINDS, SCHEDULES

DTYPES = ("float32", "bfloat16", "float16")  # torch dtypes a model loads in (engine=verl: its precisions too)
WANDB_MODES = ("online", "offline", "disabled", "shared")
SEED_MAX = 2**32 - 1  # numpy's seeds stop there
# the tiny model's sizes; model.arch may set any other Qwen3Config argument but these (marl.tiny.new_model sets them)
ARCH_SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "head_dim", "max_position_embeddings")
ARCH_SET_BY_BUILD = ("vocab_size", "pad_token_id", "eos_token_id", "bos_token_id", "tie_word_embeddings")
KINDS = {int: "an integer", float: "a finite number", bool: "true or false", str: "a non-empty string",
         list: "a non-empty list of names", dict: "a section (key: value, ...)"}


@dataclass(frozen=True)
class Rule:
    """One setting: its type, and the values allowed (a range, or choices)."""

    kind: type                # int | float | bool | str | list (of names, not empty) | dict (a section)
    lo: float | None = None   # the least value allowed (itself excluded when lo_open)
    hi: float | None = None   # the greatest (excluded when hi_open)
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple = ()       # the values a str may take
    null: bool = False        # null allowed
    required: bool = True     # False: the code reads it with a default
    per_role: bool = False    # {role: value} allowed too (model.sft.oracle_frac)
    text: str = ""            # what is allowed, where the code that reads it checks more than its type

    def allowed(self) -> str:
        if self.text:
            return self.text
        text = ", ".join(self.choices) if self.choices else KINDS[self.kind]
        ends = ((">" if self.lo_open else ">=", self.lo), ("<" if self.hi_open else "<=", self.hi))
        bounds = [f"{op} {v}" for op, v in ends if v is not None]
        text = " ".join([text, " and ".join(bounds)]) if bounds else text
        if self.per_role:
            text += ", or {role: such a number}"
        return text + (", or null" if self.null else "")

    def type_ok(self, v) -> bool:
        if v is None:
            return self.null
        if self.per_role and isinstance(v, dict):
            return bool(v) and all(self.type_ok(x) for x in v.values())
        if self.kind is int:
            return isinstance(v, int) and not isinstance(v, bool)
        if self.kind is float:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if self.kind is list:
            return isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v)
        if self.kind is str:  # an empty name or path is never meant (cache_dir= would cache into the working directory)
            return isinstance(v, str) and bool(v.strip())
        return isinstance(v, self.kind)

    def value_ok(self, v) -> bool:
        if v is None:
            return True
        if self.per_role and isinstance(v, dict):
            return all(self.value_ok(x) for x in v.values())
        if self.choices:
            return v in self.choices
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)


def Int(lo=None, hi=None, **kw) -> Rule:
    return Rule(int, lo, hi, **kw)


def Num(lo=None, hi=None, **kw) -> Rule:
    return Rule(float, lo, hi, **kw)


def OneOf(*choices: str, **kw) -> Rule:
    return Rule(str, choices=choices, **kw)


POSITIVE = Num(0, lo_open=True)
SHARE = Num(0, 1)
TEXT, FLAG, SECTION = Rule(str), Rule(bool), Rule(dict)
OPTIONAL = {"required": False}


@dataclass(frozen=True)
class Section:
    """The rules of the keys of one section (`path`, dotted; "" the top level) where `when` holds."""

    path: str
    rules: dict[str, Rule]
    when: Callable[[dict], bool] = lambda c: True
    open: bool = False   # its keys are checked by the code that reads it; only these values here
    more: Callable[[], list[str]] | None = None  # further keys allowed (read with no rule here)
    more_text: str = ""


def _tiny(c: dict) -> bool:
    return section(c, "model").get("name") == "tiny"


def _lora(c: dict) -> bool:
    return section(c, "policy").get("name") == "lora"


def _arch_keys() -> list[str]:
    from transformers import Qwen3Config

    params = inspect.signature(Qwen3Config.__init__).parameters
    return [k for k in params if k != "self" and k not in ARCH_SET_BY_BUILD]


SECTIONS = (
    Section("", {"seed": Int(0, SEED_MAX), "device": Rule(str, text="cpu, cuda, cuda:<index>"), "threads": Int(0),
                 "resume": Rule(str, null=True, **OPTIONAL), "cache_dir": TEXT,
                 **dict.fromkeys(("env", "harness", "policy", "model", "algo", "engine", "logger", "train", "eval"),
                                 SECTION),
                 "per_model": Rule(dict, **OPTIONAL), "mismatch": Rule(dict, **OPTIONAL),
                 "paper": Rule(dict, **OPTIONAL), "cell": Rule(dict, **OPTIONAL)}),
    Section("train", {"steps": Int(1), "problems_per_step": Int(1), "temperature": POSITIVE, "lr": POSITIVE,
                      "weight_decay": Num(0), "schedule": OneOf(*SCHEDULES), "warmup_steps": Int(0),
                      "ppo_epochs": Int(1), "mini_batch": Int(1), "micro_batch": Int(1),
                      "old_logprob": OneOf(*OLD_LOGPROB_MODES), "grad_clip": POSITIVE, "eval_every": Int(1),
                      "checkpoint_every": Int(1)}),
    Section("eval", {"harnesses": Rule(list), "n_val": Int(1), "n_test": Int(1), "temperature": Num(0),
                     "val_temperature": Num(0), "val_samples": Int(1), "warm_start": FLAG}),
    Section("algo", {"name": TEXT, "k": Int(2), "alpha": Num(0), "select": OneOf("best", "random"), "clip": POSITIVE,
                     "kl_coef": Num(0), "kl_type": OneOf(*KL_TYPES), "entropy_coef": Num(0), "eps": POSITIVE,
                     "norm_by_std": FLAG}),
    Section("model", {"name": TEXT, "path": Rule(str, null=True, **OPTIONAL), "dtype": OneOf(*DTYPES, **OPTIONAL),
                      "max_new_tokens": Int(1)}),
    Section("model", {"seed": Int(0, SEED_MAX, **OPTIONAL), "arch": SECTION, "sft": SECTION}, when=_tiny),
    Section("model.sft", {"instances": Int(1), "noise": Num(0, 1, hi_open=True), "steps": Int(0), "batch": Int(1),
                          "lr": POSITIVE, "threads": Int(0, **OPTIONAL),
                          "oracle_frac": Rule(float, 0, 1, per_role=True, **OPTIONAL)}, when=_tiny),
    Section("model.arch", {k: Int(1, **OPTIONAL) for k in ARCH_SIZES}, when=_tiny, more=_arch_keys,
            more_text="Qwen3Config's other arguments"),
    Section("policy", {"name": OneOf(*POLICY_KINDS), "lr": Rule(float, 0, lo_open=True, null=True, **OPTIONAL)}),
    Section("policy", {"rank": Int(1), "alpha": POSITIVE, "dropout": Num(0, 1, hi_open=True),
                       "target_modules": Rule(list)}, when=_lora),
    Section("logger", {"name": TEXT, "project": Rule(str, **OPTIONAL), "mode": OneOf(*WANDB_MODES, **OPTIONAL),
                       **{k: Rule(str, null=True, **OPTIONAL) for k in ("entity", "group", "id")}}),
    Section("engine", {"name": TEXT, "max_batch": Int(0, **OPTIONAL)}),  # max_batch 0: the engine's default
)

# marl.evaluate's config (conf/evaluate.yaml); `env` is its optional group (null: the run's own task)
EVALUATE = (
    Section("", {"run": TEXT, "checkpoint": Rule(str, text="best, latest or a checkpoint directory"),
                 "harnesses": Rule(list), "splits": Rule(list), "n": Int(1, null=True), "samples": Int(1),
                 "temperature": Num(0), "swap_roles": FLAG, "roles": Rule(dict, **OPTIONAL),
                 "seed": Int(0, SEED_MAX), "threads": Int(0), "out": Rule(str, null=True),
                 "env": Rule(dict, null=True, **OPTIONAL), "overwrite": Rule(bool, **OPTIONAL)}),
)

# what conf/evaluate_model.yaml adds to the training config (a model evaluated as it is)
EVALUATE_MODEL = (
    Section("", {"harnesses": Rule(list), "splits": Rule(list), "n": Int(1, null=True), "samples": Int(1),
                 "temperature": Num(0), "out": Rule(str, null=True), "overwrite": FLAG}),
)


def section(c: dict, path: str) -> dict:
    """The section at a dotted path ({} where there is none, or where it is not a section)."""
    for part in path.split(".") if path else []:
        c = c.get(part) if isinstance(c, dict) else None
    return c if isinstance(c, dict) else {}


def _name(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def check_keys(c: dict, open_paths: tuple[str, ...] = (), sections: tuple[Section, ...] = SECTIONS) -> None:
    """Refuse a key no code reads, naming the keys its section holds. `open_paths`: sections the
    code that reads them checks itself (an engine's own settings)."""
    paths = dict.fromkeys(s.path for s in sections)
    for path in paths:
        active = [s for s in sections if s.path == path and s.when(c)]
        if not active or path in open_paths or any(s.open for s in active):
            continue
        known = [k for s in active for k in s.rules]
        unknown = [k for k in section(c, path) if k not in known]
        more = [s for s in active if s.more]
        if unknown and more:
            extra = {k for s in more for k in s.more()}
            unknown = [k for k in unknown if k not in extra]
        if unknown:
            where = f"{path} holds" if path else "the top level holds"
            also = "".join(f", and {s.more_text}" for s in more)
            raise ValueError(f"unknown setting {', '.join(_name(path, k) for k in unknown)} (no code reads it; "
                             f"a misspelling added with +?); {where}: {', '.join(known)}{also}")


def check_types(c: dict, sections: tuple[Section, ...] = SECTIONS) -> None:
    """Refuse a missing setting, or one of the wrong type (or not finite)."""
    for path, key, rule, value, present in _settings(c, sections):
        if not present:
            if rule.required:
                raise ValueError(f"{_name(path, key)} is missing; allowed: {rule.allowed()}")
        elif not rule.type_ok(value):
            raise ValueError(f"{_name(path, key)}={value!r}; allowed: {rule.allowed()}")


def check_values(c: dict, sections: tuple[Section, ...] = SECTIONS) -> None:
    """Refuse a setting out of its range or choices (after check_types)."""
    for path, key, rule, value, present in _settings(c, sections):
        if present and not rule.value_ok(value):
            raise ValueError(f"{_name(path, key)}={value!r}; allowed: {rule.allowed()}")


def check(c: dict, sections: tuple[Section, ...]) -> None:
    """Keys, then types, then values."""
    check_keys(c, sections=sections)
    check_types(c, sections)
    check_values(c, sections)


def _settings(c: dict, sections: tuple[Section, ...]):
    """(section path, key, rule, value, present) of every rule in `sections` that applies to `c`."""
    for s in sections:
        if not s.when(c):
            continue
        values = section(c, s.path)
        for key, rule in s.rules.items():
            yield s.path, key, rule, values.get(key), key in values
