"""The harness families: each task's options reach only its own family (conf/family/), whatever
harness, arch or model a run composes; an option of another family is refused, not ignored; the
tasks declare what their family's roles call (envs/base.CodeTask, MathTask)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import envs
import roles
from envs.base import CodeTask, MathTask, Task
from envs.code import Code
from envs.codebench import CodeBench
from envs.arith import Arith
from envs.mathbench import MathBench
from omegaconf import OmegaConf

from marl.config import TaskSettings
from roles.base import COMMON_OPTIONS, harness_family, teams

CONF = str(Path(__file__).resolve().parents[2] / "conf")
EXPS = sorted(p.stem for p in (Path(CONF) / "exp").glob("*.yaml"))
FAMILY = {"planning": "planning", "sokoban": "planning", "sudoku": "planning", "code": "code", "math": "maths"}


def task_settings(cfg):
    """(task, env kwargs, harness kwargs) of a composed config, as marl.build.task_settings gives them."""
    t = TaskSettings.of(OmegaConf.to_container(cfg, resolve=True))
    return envs.make(t.env, **t.env_kw), t.env_kw, t.harness_kw


def compose_run(exp: str, *overrides: str, config: str = "config"):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        group = "exp" if config == "mismatch" else "+exp"
        return compose(config, overrides=[f"{group}={exp}", *overrides])


@pytest.mark.parametrize("exp", EXPS)
def test_every_harness_arch_and_model_composes_with_only_the_tasks_family_options(exp):
    runs = [compose_run(exp, f"harness={h}", f"model={m}") for h in ("single", "mas") for m in ("tiny", "qwen3_1.7b")]
    runs += [compose_run(exp, f"arch={a}", config="mismatch") for a in ("single", "mas_shared", "mas_per_role", "mas_lora")]
    family = harness_family(runs[0].env.name)
    assert family.name == FAMILY[exp]
    for cfg in runs:
        task, _, h_kw = task_settings(cfg)
        assert set(h_kw) == {*COMMON_OPTIONS, *family.options}
        for name in ("single", "mas"):
            roles.make_harness(task, name, **h_kw)


@pytest.mark.parametrize("exp, option", [("code", "field=3"), ("math", "coords=true"), ("code", "tool=program"),
                                         ("planning", "tests=3")])
def test_an_option_the_family_does_not_read_is_refused(exp, option):
    cfg = compose_run(exp, f"++harness.{option}")
    task, _, h_kw = task_settings(cfg)
    name = option.split("=")[0]
    match = "no choice of tool" if name == "tool" else rf"harness option\(s\) \['{name}'\]; allowed: max_turns"
    with pytest.raises(ValueError, match=match):
        roles.make_harness(task, "mas", **h_kw)


def test_the_default_tasks_harness_settings_are_the_tiny_models_cache_keys():
    """conf/family/ holds what the harness groups held: the tiny models' cache keys (marl/build.py
    model_path's spec) of the default tasks are unchanged."""
    want = {"planning": {"field": 10, "tool": "goal"}, "sokoban": {"field": 8, "tool": "goal"},
            "sudoku": {"field": 0, "tool": "grid"}}
    planning = {"max_turns": 4, "tool_timeout_s": 2.0, "instructions": False, "parse_penalty": -0.5,
                "coords": False, "positions": True, "numbered": False}
    for exp, extra in want.items():
        assert task_settings(compose_run(exp))[2] == {**planning, **extra}
    assert task_settings(compose_run("code"))[2] == {"max_turns": 5, "instructions": False, "parse_penalty": -0.5,
                                                     "tool": None}
    assert task_settings(compose_run("math"))[2] == {"max_turns": 4, "instructions": False, "parse_penalty": -0.5,
                                                     "tool": None}


def members(protocol) -> set[str]:
    return {m for m in vars(protocol) if not m.startswith("_")} | (members(Task) if protocol is not Task else set())


@pytest.mark.parametrize("cls, protocol", [(Code, CodeTask), (CodeBench, CodeTask), (Arith, MathTask),
                                           (MathBench, MathTask)])
def test_every_task_of_a_family_declares_what_its_roles_call(cls, protocol):
    missing = sorted(m for m in members(protocol) - {"name"} if not callable(getattr(cls, m, None)))
    assert not missing, f"{cls.__name__} lacks {missing} of {protocol.__name__}"


def test_tasks_are_instances_of_their_familys_contract():
    assert isinstance(envs.make("code"), CodeTask) and isinstance(envs.make("math"), MathTask)
    assert not isinstance(envs.make("planpath"), CodeTask)
    families = {harness_family(t).name for t, _ in teams()}
    assert families == {"planning", "code", "maths"}
