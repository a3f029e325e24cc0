"""Typed run settings, built once from the Hydra config at the entry points (marl.train,
marl.evaluate, the experiments, the benchmarks). Every check a run would otherwise only trip over
later runs here, once, naming what is allowed; the modules below read these frozen dataclasses,
never a Hydra section.

    s = run_settings(cfg)              # a composed training config (conf/config.yaml)
    s = load_run_settings(run_dir)     # the config.yaml marl.train wrote into a run directory
    e = evaluate_settings(cfg)         # marl.evaluate's config (conf/evaluate.yaml)

The env and harness options stay dicts, checked here by their own code: the env's names and types
by envs.check_options, a generated task's ranges by making it (a task read from files is made at
the build), the harness options' names and values by the family's check_options (its rules,
roles/). The values and keys of every other section are checked by marl/checks.py's table.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from omegaconf import OmegaConf

from marl.engine.spec import POLICY_KINDS, LoraSpec, UpdateSpec

LOGGERS = ("wandb", "none")


@dataclass(frozen=True)
class TaskSettings:
    """The task (`env` group) and the harness settings (`harness` group), less their names."""

    env: str
    env_kw: dict
    harness: str  # the training harness
    harness_kw: dict

    @classmethod
    def of(cls, c: dict) -> "TaskSettings":
        """From a resolved run config: its `env` and `harness` groups (unchecked: the task and
        harness registries refuse unknown names and options when they are used)."""
        return cls(c["env"]["name"], _less_name(c["env"]), c["harness"]["name"], _less_name(c["harness"]))


@dataclass(frozen=True)
class ModelSettings:
    """The model the policies start from: `path` (a local HF directory or hub id), or the tiny
    model built from `arch` and warm-started by `sft` (marl/tiny.py; both part of its cache key)."""

    name: str
    path: str | None
    dtype: str
    max_new_tokens: int
    seed: int = 0
    arch: dict = field(default_factory=dict)
    sft: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PolicySettings:
    name: str                   # shared | per_role | lora
    lr: float | None = None     # a LoRA adapter's own learning rate (None: train.lr)
    lora: LoraSpec | None = None


@dataclass(frozen=True)
class EngineSettings:
    name: str          # the engine registry's key
    max_batch: int     # most sequences in one generate call (0: the engine's default)
    options: object    # the engine's own typed settings (Engine.read_settings; None for `local`)


@dataclass(frozen=True)
class AlgoSettings:
    name: str          # at_grpo | grpo (marl.algos)
    k: int             # candidates per group
    alpha: float       # reward = local + alpha * team
    select: str        # which candidate the episode continues from
    eps: float
    norm_by_std: bool
    kl_coef: float     # > 0 keeps a KL reference policy (the loss terms are in UpdateSpec)


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    problems_per_step: int
    temperature: float
    lr: float
    weight_decay: float
    schedule: str
    warmup_steps: int
    eval_every: int
    checkpoint_every: int


@dataclass(frozen=True)
class EvalSettings:
    """Evaluation during training: validation selects the checkpoint, test reports it."""

    harnesses: tuple[str, ...]
    n_val: int
    n_test: int
    temperature: float
    val_temperature: float
    val_samples: int
    warm_start: bool


@dataclass(frozen=True)
class LoggerSettings:
    name: str                 # wandb | none (metrics.jsonl is always written)
    project: str = "marl"
    mode: str = "offline"
    entity: str | None = None
    group: str | None = None
    run_name: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class RunSettings:
    """One training run; `config` is the resolved Hydra config it was built from, written to the
    run directory (config.yaml) and given to W&B."""

    seed: int
    device: str
    threads: int
    resume: str | None
    cache_dir: str
    task: TaskSettings
    model: ModelSettings
    policy: PolicySettings
    engine: EngineSettings
    algo: AlgoSettings
    train: TrainSettings
    eval: EvalSettings
    update: UpdateSpec
    logger: LoggerSettings
    config: dict

    def resumed(self, run_dir) -> "RunSettings":
        """The same run, continued from the latest checkpoint under `run_dir`."""
        return replace(self, resume=str(run_dir), config={**self.config, "resume": str(run_dir)})

    def with_steps(self, steps: int) -> "RunSettings":
        c = {**self.config, "train": {**self.config["train"], "steps": steps}}
        return replace(self, train=replace(self.train, steps=steps), config=c)


def run_settings(cfg) -> RunSettings:
    """A composed training config (DictConfig or its resolved dict), checked: every key is one
    some code reads, and every value is of its type and in its range (marl.checks)."""
    return _from_dict(cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True))


def saved_config(run_dir) -> dict:
    """The resolved config marl.train wrote into `run_dir` (config.yaml), unchecked: for reading a
    finished run's labels on another machine (marl.analysis)."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise ValueError(f"run={run_dir}: not a run directory of marl.train (no config.yaml)")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def load_run_settings(run_dir) -> RunSettings:
    """The settings of the run in `run_dir`, from the config.yaml marl.train wrote there. Its
    values are checked again; keys this version no longer reads are not refused (the run was
    trained with them: older runs held e.g. `tiny_lr` at the top level)."""
    return _from_dict(saved_config(run_dir), saved=True)


def save_run_settings(s: RunSettings, run_dir: Path) -> None:
    OmegaConf.save(OmegaConf.create(s.config), Path(run_dir) / "config.yaml")


def _from_dict(c: dict, saved: bool = False) -> RunSettings:
    import envs
    from marl import algos, checks
    from marl.engine import engine_class, engine_names
    from roles import harness_family, harness_names

    if not saved:
        own = _reads_own_settings(checks.section(c, "engine").get("name"))
        checks.check_keys(c, open_paths=("engine",) if own else ())
    checks.check_types(c)
    a, t, e, pol, h, env = c["algo"], c["train"], c["eval"], c["policy"], c["harness"], c["env"]
    algos.get(a["name"])  # refuses an unknown algorithm, naming the allowed ones
    if a["k"] < 2:
        raise ValueError(f"algo.k must be >= 2 to form groups, got {a['k']}")
    if pol["name"] not in POLICY_KINDS:
        raise ValueError(f"unknown policy {pol['name']!r}; allowed: {', '.join(POLICY_KINDS)}")
    if c["engine"]["name"] not in engine_names():
        raise ValueError(f"unknown engine {c['engine']['name']!r}; registered: {', '.join(engine_names())}")
    for name in [h["name"], *e["harnesses"]]:
        if name not in harness_names(env["name"]):
            raise ValueError(f"unknown harness {name!r} for env {env['name']}; allowed: "
                             f"{', '.join(harness_names(env['name']))}")
    envs.check_options(env["name"], _less_name(env))  # names and types; reads no data
    if env["name"] in envs.registered():
        # a generated task is made in no time, and checks its own ranges (before an interpolated
        # harness option such as sokoban's field=${env.max_moves} is blamed for a bad env value)
        envs.make(env["name"], **_less_name(env))
    if harness_family(env["name"]):
        harness_family(env["name"]).check_options(_less_name(h))  # names and values, before any build
    update = UpdateSpec(clip=a["clip"], ppo_epochs=t["ppo_epochs"], mini_batch=t["mini_batch"],
                        micro_batch=t["micro_batch"], grad_clip=t["grad_clip"], old_logprob=t["old_logprob"],
                        entropy_coef=a["entropy_coef"], kl_coef=a["kl_coef"], kl_type=a["kl_type"])
    if h["max_turns"] < 1 or t["temperature"] <= 0 or t["steps"] < 1:
        raise ValueError("harness.max_turns and train.steps must be >= 1 and train.temperature > 0; got "
                         f"{h['max_turns']}, {t['steps']}, {t['temperature']}")
    if e["val_samples"] < 1 or (e["val_samples"] > 1 and e["val_temperature"] <= 0):
        raise ValueError(f"eval.val_samples must be >= 1, and > 1 only with eval.val_temperature > 0 (greedy "
                         f"episodes repeat); got val_samples={e['val_samples']}, val_temperature={e['val_temperature']}")
    # a generate-only engine (engine=openai) loads no weights: its model group gives settings only
    model = _model(c["model"], check_path=engine_class(c["engine"]["name"]).trains)
    check_device(str(c["device"]))
    eng = c["engine"]
    options = engine_class(eng["name"]).read_settings(eng)
    checks.check_values(c)
    return RunSettings(
        seed=c["seed"], device=str(c["device"]), threads=c["threads"], resume=c.get("resume"),
        cache_dir=c["cache_dir"],
        task=TaskSettings.of(c),
        model=model, policy=_policy(pol), engine=EngineSettings(eng["name"], eng.get("max_batch", 0), options),
        algo=AlgoSettings(a["name"], a["k"], a["alpha"], a["select"], a["eps"], a["norm_by_std"], a["kl_coef"]),
        train=TrainSettings(t["steps"], t["problems_per_step"], t["temperature"], t["lr"], t["weight_decay"],
                            t["schedule"], t["warmup_steps"], t["eval_every"], t["checkpoint_every"]),
        eval=EvalSettings(tuple(e["harnesses"]), e["n_val"], e["n_test"], e["temperature"], e["val_temperature"],
                          e["val_samples"], e["warm_start"]),
        update=update, logger=_logger(c["logger"]), config=c)


def _reads_own_settings(engine: str | None) -> bool:
    """Whether the engine checks its config group itself (engine=verl: VerlSettings); any other
    holds only `name` and `max_batch`."""
    from marl.engine import Engine, engine_class, engine_names

    return engine in engine_names() and engine_class(engine).read_settings.__func__ is not Engine.read_settings.__func__


def _less_name(group: dict) -> dict:
    return {k: v for k, v in group.items() if k != "name"}


def _model(m: dict, check_path: bool = True) -> ModelSettings:
    """Refuses a model path that would only fail deep inside transformers (where weights load)."""
    path = m.get("path")
    if path and check_path:
        p = Path(path).expanduser()
        local = p.is_absolute() or str(path).startswith((".", "~")) or p.exists()
        if local and not (p / "config.json").exists():
            what = "does not exist" if not p.exists() else "holds no config.json"
            raise ValueError(f"model.path={path}: {what}. Pass a local Hugging Face model directory "
                             "(config.json, weights and tokenizer files, e.g. from `huggingface-cli download`), "
                             "a hub id already in the local cache (e.g. Qwen/Qwen3-1.7B), or model=tiny")
        if not local:
            _check_hub_cache(str(path))
    elif not path and m["name"] != "tiny":
        raise ValueError(f"model={m['name']} needs model.path (a local HF directory or hub id)")
    return ModelSettings(m["name"], str(path) if path else None, m.get("dtype", "float32"), m["max_new_tokens"],
                         m.get("seed", 0), m.get("arch") or {}, m.get("sft") or {})


def _check_hub_cache(repo_id: str) -> None:
    """Refuses a hub id whose model is not in the local Hugging Face cache: marl downloads nothing
    at run time (a download would only start, and fail or stall, once the policies load)."""
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(repo_id, "config.json")
    except HFValidationError:
        raise ValueError(f"model.path={repo_id}: neither a local directory nor a Hugging Face hub id (Org/Name). "
                         "Pass a local model directory, a hub id already in the local cache, or model=tiny") from None
    if not isinstance(cached, str):
        raise ValueError(f"model.path={repo_id}: not a local directory, and that hub id is not in the local Hugging "
                         f"Face cache ({constants.HF_HUB_CACHE}); marl downloads nothing at run time. Download it "
                         f"first (`huggingface-cli download {repo_id}`, or `hf download {repo_id}`; HF_HUB_CACHE "
                         "or HF_HOME choose the cache), or pass model.path=<a local model directory>")


def check_device(dev: str) -> None:
    """Refuses a device that would only fail deep inside torch."""
    import torch

    if dev != "cpu" and not dev.startswith("cuda"):
        raise ValueError(f"device={dev!r}; allowed: cpu, cuda, cuda:<index>")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={dev}, but torch {torch.__version__} sees no CUDA GPU "
                         f"(built with CUDA: {torch.version.cuda or 'no'}). Run with device=cpu, or on a "
                         "machine with an NVIDIA GPU and a CUDA build of torch")


def _policy(p: dict) -> PolicySettings:
    lora = None
    if p["name"] == "lora":
        lora = LoraSpec(rank=p["rank"], alpha=p["alpha"], dropout=p["dropout"],
                        target_modules=tuple(p["target_modules"]))
    return PolicySettings(p["name"], p.get("lr"), lora)


def _logger(lg: dict) -> LoggerSettings:
    if lg["name"] not in LOGGERS:
        raise ValueError(f"unknown logger {lg['name']!r}; allowed: {', '.join(LOGGERS)}")
    # W&B's run name is the logger group's `name` (as before: wandb), unless the group names another
    return LoggerSettings(lg["name"], lg.get("project", "marl"), lg.get("mode", "offline"), lg.get("entity"),
                          lg.get("group"), lg.get("name"), lg.get("id"))


# ---- marl.evaluate -------------------------------------------------------------------------------

GENERATED_N = 100  # problems per split of a generated task when n=null (a data set's: its whole split)


@dataclass(frozen=True)
class EvaluateSettings:
    """marl.evaluate's settings and those of what it evaluates: a run's checkpoint
    (conf/evaluate.yaml: `run_dir`, `trained` its settings), or a model as it is
    (conf/evaluate_model.yaml: `run_dir` None, `trained` the composed training config's task,
    model and engine, e.g. engine=openai's endpoint)."""

    run_dir: Path | None
    trained: RunSettings
    checkpoint: str | None
    harnesses: tuple[str, ...]
    splits: tuple[str, ...]
    n: int | None        # problems per split; None: a data set's whole split, GENERATED_N of a generated task
    samples: int
    temperature: float
    swap_roles: bool
    roles: dict          # explicit role -> policy, applied last
    seed: int
    threads: int
    out: Path
    env: dict | None = None  # the `env` group given (name and options); None: the run's own task
    overwrite: bool = False  # start the episode record at `out` over instead of resuming it

    @property
    def served(self) -> bool:
        """A model as it is (no run directory, no checkpoint)."""
        return self.run_dir is None

    @property
    def task(self) -> TaskSettings:
        """The task evaluated, with the run's harness settings: the run's own, or `env`'s."""
        if self.env is None:
            return self.trained.task
        return replace(self.trained.task, env=self.env["name"], env_kw=_less_name(self.env))


def evaluate_settings(cfg) -> EvaluateSettings:
    """marl.evaluate's config, checked (names, types and ranges, with what is allowed) before any
    work; the data an `env` reads is sized by marl.evaluate before the model loads."""
    from marl import checkpoint, checks

    c = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    # a raw load of conf/evaluate.yaml (experiments.mismatch) holds Hydra's own keys, no settings
    c = {k: v for k, v in c.items() if k not in ("defaults", "hydra")}
    if "run" not in c:
        return _model_evaluate_settings(c)
    checks.check(c, checks.EVALUATE)
    _check_lists(c)
    run_dir = Path(c["run"])
    if not (run_dir / "config.yaml").exists():
        raise ValueError(f"run={run_dir}: not a run directory of marl.train (no config.yaml)")
    checkpoint.resolve(run_dir, str(c["checkpoint"]))  # names what is allowed
    rs = load_run_settings(run_dir)
    env = _evaluated_env(c.get("env"), rs, run_dir)
    _check_names(c, env["name"] if env else rs.task.env)
    return EvaluateSettings(run_dir, rs, str(c["checkpoint"]), tuple(c["harnesses"]), tuple(c["splits"]), c["n"],
                            c["samples"], float(c["temperature"]), c["swap_roles"], dict(c.get("roles") or {}),
                            c["seed"], c["threads"] or rs.threads,
                            Path(c["out"]) if c["out"] else run_dir / _default_out(env), env, c.get("overwrite", False))


# what conf/evaluate_model.yaml adds to the training config (conf/config.yaml)
MODEL_EVALUATE_KEYS = ("harnesses", "splits", "n", "samples", "temperature", "out", "overwrite")


def _model_evaluate_settings(c: dict) -> EvaluateSettings:
    """conf/evaluate_model.yaml: the training config's task, model and engine, evaluated as they are."""
    from marl import checks

    ev = {k: c[k] for k in MODEL_EVALUATE_KEYS if k in c}
    checks.check(ev, checks.EVALUATE_MODEL)
    _check_lists(ev)
    rs = run_settings({k: v for k, v in c.items() if k not in MODEL_EVALUATE_KEYS})
    if rs.policy.name != "shared":
        raise ValueError(f"policy={rs.policy.name}: a model evaluated as it is plays every role (policy=shared); "
                         "per-role policies come from a trained run: python -m marl.evaluate run=<run dir>")
    _check_names(ev, rs.task.env)
    out = Path(ev["out"]) if ev["out"] else Path(f"evaluate_{rs.task.env}_{_model_slug(rs)}.json")
    return EvaluateSettings(None, rs, None, tuple(ev["harnesses"]), tuple(ev["splits"]), ev["n"], ev["samples"],
                            float(ev["temperature"]), False, {}, rs.seed, rs.threads, out, None, ev["overwrite"])


def _model_slug(rs: RunSettings) -> str:
    """The model's name in a default file name: engine.model's last part, or the model group's."""
    import re

    name = getattr(rs.engine.options, "model", None) or rs.model.path or rs.model.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(name).rstrip("/").split("/")[-1]) or "model"


def _check_lists(c: dict) -> None:
    for key in ("harnesses", "splits"):
        if len(set(c[key])) != len(c[key]):
            raise ValueError(f"{key}={c[key]}: a name appears twice; allowed: a list without repeats")
    if c["samples"] > 1 and c["temperature"] <= 0:
        raise ValueError(f"samples={c['samples']} with temperature=0 repeats one greedy episode; set temperature > 0")


def _check_names(c: dict, task: str) -> None:
    from envs import SPLITS
    from roles import harness_names

    known = harness_names(task)
    for h in c["harnesses"]:
        if h not in known:
            raise ValueError(f"unknown harness {h!r} for task {task}; allowed: {', '.join(known)}")
    for split in c["splits"]:
        if split not in SPLITS:
            raise ValueError(f"splits: unknown split {split!r}; allowed: {', '.join(SPLITS)}")


def _default_out(env: dict | None) -> str:
    """evaluate.json for the run's own task; evaluate_<env>.json for another, so an evaluation
    on a benchmark never replaces the one on the run's own test set."""
    return "evaluate.json" if env is None else f"evaluate_{env['name']}.json"


def _evaluated_env(env, rs: RunSettings, run_dir: Path) -> dict | None:
    """The `env` group given, if any: a task of the run's harness family (its policies play that
    family's roles and prompts), e.g. a maths run on aime24, a code run on livecodebench."""
    from roles.base import harness_family, teams

    if env is None:
        return None
    if not isinstance(env, dict) or not env.get("name"):
        raise ValueError(f"env={env!r}: choose the task with env=<name> (a file of conf/env/), then set its options, "
                         "e.g. env=aime24 env.data_dir=<dir>; env.<key> alone names no task")
    own = harness_family(rs.task.env)
    fam = harness_family(env["name"])
    if fam is None or own is None or fam.name != own.name:
        fits = sorted({t for t, _ in teams() if own is not None and harness_family(t).name == own.name})
        what = f"a {fam.name} task" if fam else "not a task with harnesses"
        raise ValueError(f"env={env['name']} is {what}, but the run in {run_dir} trained on {rs.task.env}, a "
                         f"{own.name if own else '?'} task: its policies play that family's roles only; "
                         f"allowed env: {', '.join(fits)}")
    return dict(env)
