"""Build what a run needs from its settings (`marl.config.RunSettings`): the task, harness
settings, the model to start from (the tiny model is built and cached) and the engine holding the
policies. `marl.train`, `marl.evaluate`, the experiments and the benchmarks all build through
`build_run`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from marl.config import RunSettings
from marl.engine import Engine, EngineSpec, OptimSpec, engine_class, make_engine
from marl.routing import Routing, policy_ids


def task_settings(s: RunSettings):
    """(task, env kwargs, harness kwargs) of a run: its `env` and `harness` groups less their
    names (marl.config.TaskSettings)."""
    import envs

    return envs.make(s.task.env, **s.task.env_kw), s.task.env_kw, s.task.harness_kw


def model_path(s: RunSettings, task, h_kw: dict, env_kw: dict, log=print) -> str:
    """The directory the policies start from: `model.path`, or the tiny model built (or loaded
    from `cache_dir`) for this task. The tiny model learns every harness format of the task,
    whatever the run evaluates, and is built from the settings that shape it, with the RL-time
    ones (rewards, harness.max_turns, limits) at their defaults (`marl.tiny.build_settings`), so
    one cached warm start serves every run on the task that differs only in those."""
    if s.model.path:
        return s.model.path
    import envs
    from marl.tiny import build_settings, ensure_built
    from roles import harness_names, make_harness

    env_b, h_b = build_settings(s.task.env, env_kw, h_kw)
    spec = warm_start_spec(s, env_b, h_b)
    _note_older_warm_start(s, spec, warm_start_spec(s, env_kw, h_kw), log)
    built_task = task if env_b == env_kw else envs.make(s.task.env, **env_b)
    harnesses = [make_harness(built_task, n, **h_b) for n in harness_names(task.name)]
    return str(ensure_built(harnesses, spec, s.cache_dir, log=log))


def warm_start_spec(s: RunSettings, env_kw: dict, h_kw: dict) -> dict:
    """The tiny model's spec (marl.tiny.ensure_built; its cache key) from the env and harness
    settings it is built with."""
    from roles import harness_names

    return {"task": {"env": env_kw, "harness": h_kw}, "harnesses": harness_names(s.task.env),
            "seed": s.model.seed, "model": s.model.arch, "sft": s.model.sft}


def _note_older_warm_start(s: RunSettings, spec: dict, as_set: dict, log) -> None:
    """Before the RL-time settings were left out of the build, a run with non-default ones was
    warm-started from a model of its own: say where it is, for evaluating or resuming such runs."""
    from marl.tiny import cache_key

    older = Path(s.cache_dir).expanduser() / f"tiny-{cache_key(as_set)}"
    if as_set != spec and (older / "done.json").exists():
        log(f"[tiny] this run starts from the warm start of its build-time settings; runs with its RL-time "
            f"settings made before they were left out of the build started from {older}: evaluate or resume "
            f"those with model.path={older}")


def check_engine(s: RunSettings, n_policies: int) -> None:
    """Refuse an engine this machine cannot run (engine=verl without GPUs) before any build."""
    engine_class(s.engine.name).check_environment(s.engine.options, n_policies)


def engine_spec(s: RunSettings, path: str, train_roles: list[str]) -> EngineSpec:
    t, pol = s.train, s.policy
    lr = pol.lr or t.lr  # a LoRA adapter may want its own learning rate
    return EngineSpec(name=s.engine.name, kind=pol.name, policy_ids=policy_ids(pol.name, train_roles),
                      model_path=path, dtype=s.model.dtype, device=s.device, max_new_tokens=s.model.max_new_tokens,
                      max_batch=s.engine.max_batch,
                      optim=OptimSpec(lr=lr, weight_decay=t.weight_decay, schedule=t.schedule,
                                      warmup_steps=t.warmup_steps, total_steps=t.steps),
                      reference=s.algo.kl_coef > 0, seed=s.seed, lora=pol.lora, update=s.update,
                      settings=s.engine.options)


@dataclass
class BuiltRun:
    task: object
    h_kw: dict
    train_roles: list[str]
    engine: Engine

    def routing(self, role_names: list[str]) -> Routing:
        """The run's own routing in a harness with these roles."""
        return Routing.default(self.engine.spec.kind, self.train_roles, role_names)


def check_data(task, need: dict[str, int], settings: dict[str, str] | None = None) -> None:
    """A task read from files: every split the run uses opened, parsed and sized before the
    model loads (a generated task has nothing to check)."""
    from envs.base import FileSplits

    if isinstance(task, FileSplits):
        task.check_sizes(need, settings)


def build_run(s: RunSettings, log=print, need: dict[str, int] | None = None,
              need_settings: dict[str, str] | None = None) -> BuiltRun:
    """`need`: problems per split the caller will use, checked before the model loads (default, a
    training run's: train non-empty, eval.n_val validation and eval.n_test test problems);
    `need_settings`: the setting that asks for each split's, for the error (default eval.n_val ...)."""
    from roles import make_harness

    task, env_kw, h_kw = task_settings(s)
    check_data(task, need if need is not None else {"train": 1, "val": s.eval.n_val, "test": s.eval.n_test},
               need_settings)
    train_roles = make_harness(task, s.task.harness, **h_kw).role_names
    check_engine(s, len(policy_ids(s.policy.name, train_roles)))
    # a generate-only engine (engine=openai) holds no weights: nothing to build or find
    path = model_path(s, task, h_kw, env_kw, log=log) if engine_class(s.engine.name).trains else ""
    return BuiltRun(task, h_kw, train_roles, make_engine(engine_spec(s, path, train_roles)))
