"""marl.config.run_settings refuses a bad training config before anything is built or written:
every setting's type, range and choices (marl/checks.py), keys no code reads, a hub id that is not
in the local Hugging Face cache; and the tiny model's build refuses a cache directory it cannot
write before it starts. All pure: composed configs, no model."""
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from marl.config import load_run_settings, run_settings

CONF = str(Path(__file__).resolve().parents[2] / "conf")
EXPS = sorted(p.stem for p in (Path(CONF) / "exp").glob("*.yaml"))


def compose_cfg(*overrides, config="config", exp="planning"):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose(config, overrides=[f"{'exp' if config == 'mismatch' else '+exp'}={exp}", *overrides])


def settings(*overrides, **kw):
    return run_settings(compose_cfg(*overrides, **kw))


@pytest.fixture
def model_dir(tmp_path):
    """A stand-in for a local HF model directory (the check reads only config.json)."""
    (tmp_path / "config.json").write_text("{}")
    return tmp_path


@pytest.mark.parametrize("override, msg", [
    # types (each used to fail later, deep inside the run, or not at all)
    ("train.steps=abc", "train.steps='abc'; allowed: an integer >= 1$"),
    ("cache_dir=", "cache_dir=''; allowed: a non-empty string$"),  # would cache into the working directory
    ("seed=abc", "seed='abc'; allowed: an integer >= 0 and <= 4294967295$"),
    ("train.steps=1e3", r"train.steps=1000.0; allowed: an integer >= 1$"),  # a float is not an integer setting
    ("algo.k=true", "algo.k=True; allowed: an integer >= 2$"),                # nor is a bool
    ("algo.norm_by_std=1", "algo.norm_by_std=1; allowed: true or false$"),
    ("eval.warm_start=yes", "eval.warm_start='yes'; allowed: true or false$"),
    ("device=1", "device=1; allowed: cpu, cuda, cuda:<index>$"),
    ("eval.harnesses=[]", r"eval.harnesses=\[\]; allowed: a non-empty list of names$"),
    # finiteness
    ("algo.alpha=nan", "algo.alpha=nan; allowed: a finite number >= 0$"),
    ("train.lr=inf", "train.lr=inf; allowed: a finite number > 0$"),
    # ranges
    ("train.lr=-1", "train.lr=-1; allowed: a finite number > 0$"),
    ("threads=-1", "threads=-1; allowed: an integer >= 0$"),
    ("train.eval_every=0", "train.eval_every=0; allowed: an integer >= 1$"),
    ("train.checkpoint_every=0", "train.checkpoint_every=0; allowed: an integer >= 1$"),
    ("train.problems_per_step=0", "train.problems_per_step=0; allowed: an integer >= 1$"),
    ("train.warmup_steps=-1", "train.warmup_steps=-1; allowed: an integer >= 0$"),
    ("train.weight_decay=-0.1", "train.weight_decay=-0.1; allowed: a finite number >= 0$"),
    ("train.grad_clip=0", "train.grad_clip=0; allowed: a finite number > 0$"),
    ("eval.n_val=0", "eval.n_val=0; allowed: an integer >= 1$"),
    ("eval.n_test=0", "eval.n_test=0; allowed: an integer >= 1$"),
    ("eval.temperature=-1", "eval.temperature=-1; allowed: a finite number >= 0$"),
    ("algo.eps=0", "algo.eps=0; allowed: a finite number > 0$"),
    ("algo.clip=-0.2", "algo.clip=-0.2; allowed: a finite number > 0$"),
    ("algo.kl_coef=-1", "algo.kl_coef=-1; allowed: a finite number >= 0$"),
    ("algo.entropy_coef=-1", "algo.entropy_coef=-1; allowed: a finite number >= 0$"),
    ("engine.max_batch=-1", "engine.max_batch=-1; allowed: an integer >= 0$"),
    ("model.max_new_tokens=0", "model.max_new_tokens=0; allowed: an integer >= 1$"),
    ("model.sft.noise=1.5", r"model.sft.noise=1.5; allowed: a finite number >= 0 and < 1$"),
    ("model.sft.oracle_frac={plan:2}", r"model.sft.oracle_frac=\{'plan': 2\}; allowed: .* or \{role: such a number\}$"),
    ("model.arch.num_hidden_layers=0", "model.arch.num_hidden_layers=0; allowed: an integer >= 1$"),
    # names, with the allowed ones
    ("algo.kl_type=foo", "algo.kl_type='foo'; allowed: low_var_kl, k3, kl, k1, abs, mse, k2, low_var_kl\\+, .*k2\\+$"),
    ("algo.select=foo", "algo.select='foo'; allowed: best, random$"),
    ("train.schedule=linear", "train.schedule='linear'; allowed: cosine, constant$"),
    ("+model.dtype=fp8", "model.dtype='fp8'; allowed: float32, bfloat16, float16$"),
    ("logger.mode=sometimes", "logger.mode='sometimes'; allowed: online, offline, disabled, shared$"),
])
def test_a_bad_value_is_refused_naming_the_setting_and_what_is_allowed(override, msg):
    with pytest.raises(ValueError, match=msg):
        settings(override)


@pytest.mark.parametrize("overrides, msg", [
    (["policy=lora", "policy.rank=0"], "policy.rank=0; allowed: an integer >= 1$"),
    (["policy=lora", "policy.dropout=1"], "policy.dropout=1; allowed: a finite number >= 0 and < 1$"),
    (["policy=lora", "policy.target_modules=[]"], r"policy.target_modules=\[\]; allowed: a non-empty list"),
    (["policy=lora", "policy.lr=-1"], "policy.lr=-1; allowed: a finite number > 0, or null$"),
])
def test_the_lora_settings_are_checked(overrides, msg):
    with pytest.raises(ValueError, match=msg):
        settings(*overrides)


@pytest.mark.parametrize("override, key, section", [
    ("+algo.kk=8", "algo.kk", "algo holds: name, k, alpha,"),
    ("+train.step=3", "train.step", "train holds: steps, problems_per_step,"),
    ("+eval.n=3", "eval.n", "eval holds: harnesses, n_val, n_test,"),
    ("+model.temperature=1", "model.temperature", "model holds: name, path, dtype, max_new_tokens, seed, arch, sft"),
    ("+model.sft.step=3", "model.sft.step", "model.sft holds: instances, noise, steps,"),
    ("+model.arch.hidden=3", "model.arch.hidden",
     "model.arch holds: hidden_size, .*, and Qwen3Config's other arguments"),
    ("+policy.rank=8", "policy.rank", "policy holds: name, lr$"),  # only policy=lora reads it
    ("+logger.projet=x", "logger.projet", "logger holds: name, project, mode, entity, group, id$"),
    ("+engine.max_batchs=8", "engine.max_batchs", "engine holds: name, max_batch$"),
    ("+lr=1e-3", "lr", "the top level holds: seed, device, threads, resume, cache_dir, env,"),
])
def test_a_key_no_code_reads_is_refused_naming_the_known_ones(override, key, section):
    with pytest.raises(ValueError, match=rf"unknown setting {key} \(no code reads it; a misspelling added with \+\?\); "
                                         rf"{section}"):
        settings(override)


@pytest.mark.parametrize("overrides, msg", [
    (["+env.foo=1"],
     r"unknown env option\(s\) env.foo for env=planpath; allowed: size, wall_frac, min_dist, seed, rewards$"),
    (["+harness.foo=1"], r"unknown planning harness option\(s\) \['foo'\]; allowed: max_turns, instructions,"),
    (["env=aime24", "env.data_dir=/nowhere", "+env.foo=1"],  # a task read from files: no file is read to say it
     r"unknown env option\(s\) env.foo for env=aime24; allowed: data_dir, test_sets, seed, rewards$"),
])
def test_an_unknown_task_or_harness_option_is_refused_with_the_settings(overrides, msg):
    with pytest.raises(ValueError, match=msg):
        settings(*overrides, exp="math" if "env=aime24" in overrides else "planning")


@pytest.mark.parametrize("exp, override, msg", [
    # harness options: each family's rules (roles/); field is a build-time setting (a bad one used to start a build)
    ("planning", "harness.field=-1", r"harness.field=-1; allowed: an integer >= 0, or null$"),
    ("planning", "harness.field=abc", r"harness.field='abc'; allowed: an integer >= 0, or null$"),
    ("planning", "harness.tool_timeout_s=-1", r"harness.tool_timeout_s=-1; allowed: a finite number > 0$"),
    ("planning", "harness.tool=grid", r"harness.tool='grid'; allowed: goal, program, or null$"),
    ("sudoku", "harness.tool=goal", r"harness.tool='goal'; allowed: grid, program, or null$"),
    ("planning", "harness.coords=3", r"harness.coords=3; allowed: true or false$"),
    ("sokoban", "harness.positions=yes", r"harness.positions='yes'; allowed: true or false$"),
    ("planning", "harness.numbered=null", r"harness.numbered=None; allowed: true or false$"),
    ("planning", "harness.max_turns=0", r"harness.max_turns=0; allowed: an integer >= 1$"),
    ("planning", "harness.max_turns=abc", r"harness.max_turns='abc'; allowed: an integer >= 1$"),
    ("code", "harness.instructions=1", r"harness.instructions=1; allowed: true or false$"),
    ("math", "harness.parse_penalty=abc", r"harness.parse_penalty='abc'; allowed: a finite number$"),
    ("code", "harness.tool=program", r"harness.tool='program'; allowed: null \(the code team has no choice of tool\)$"),
    ("math", "harness.tool=program", r"harness.tool='program'; allowed: null \(the maths team has no choice of tool\)$"),
    # env options: types from the task's annotations, ranges by the task itself (made: a generated task)
    ("planning", "env.size=abc", r"env.size='abc'; allowed: an integer$"),
    ("planning", "env.seed=abc", r"env.seed='abc'; allowed: an integer$"),     # used to seed a generator
    ("planning", "env.wall_frac=x", r"env.wall_frac='x'; allowed: a finite number$"),
    ("planning", "env.rewards=abc", r"env.rewards='abc'; allowed: a section \(key: value, ...\), or null$"),
    ("sokoban", "env.size=abc", r"env.size='abc'; allowed: an integer$"),
    ("sokoban", "env.max_moves=abc", r"env.max_moves='abc'; allowed: an integer, or null$"),
    # not blamed on the harness option interpolated from it (field: ${env.max_moves})
    ("sokoban", "env.max_moves=-1", r"sokoban max_moves \(-1\) must be >= min_moves \(3\) or null$"),
    ("planning", "env.size=1", r"planpath size must be >= 2, got 1$"),
    ("code", "env.hidden=abc", r"env.hidden='abc'; allowed: an integer$"),
    ("math", "env.lo=abc", r"env.lo='abc'; allowed: an integer$"),
])
def test_a_bad_harness_or_env_option_is_refused_naming_the_setting_and_what_is_allowed(exp, override, msg):
    """run_settings refuses it: before the build (the tiny model's, minutes), not inside it."""
    with pytest.raises(ValueError, match=msg):
        settings(override, exp=exp)


@pytest.mark.parametrize("exp, overrides", [
    ("planning", ["harness.field=null"]),          # no field
    ("planning", ["harness.tool=null"]),           # the board's first query tool
    ("planning", ["harness.tool=program", "harness.tool_timeout_s=1"]),
    ("sudoku", ["harness.tool=grid"]),
    ("sokoban", ["env.max_moves=null"]),           # field follows it: null
    ("code", ["harness.tool=null"]),
])
def test_valid_harness_and_env_options_pass(exp, overrides):
    settings(*overrides, exp=exp)


@pytest.mark.parametrize("overrides", [
    ["train.lr=1"],                      # an integer where a number is wanted
    ["engine.max_batch=0"],              # 0: the engine's default
    ["algo.kl_type=k3+", "algo.kl_coef=0.1"],
    ["policy=lora", "policy.lr=null"],
    ["policy=per_role", "logger=none"],
    ["engine=verl"],                     # its own keys are checked by VerlSettings (and the GPUs at build)
    ["+model.arch.rms_norm_eps=1e-5"],   # another Qwen3Config argument
    ["model.sft.oracle_frac={tool:0.7,plan:0.4}"],
])
def test_valid_settings_pass(overrides):
    settings(*overrides)


@pytest.mark.parametrize("exp", EXPS)
def test_every_experiment_passes_with_every_model_and_arch(exp, model_dir):
    """The keys experiments and model configs add (per_model, and the mismatch section) are known."""
    for model in ("tiny", f"qwen3_1.7b model.path={model_dir}", f"qwen3_8b model.path={model_dir}"):
        for policy in ("shared", "per_role", "lora"):
            settings(*f"model={model}".split(), f"policy={policy}", exp=exp)
    for arch in ("single", "mas_shared", "mas_per_role", "mas_lora"):
        s = settings(f"arch={arch}", config="mismatch", exp=exp)
        assert "mismatch" in s.config


def test_a_hub_id_must_be_in_the_local_cache(tmp_path, monkeypatch):
    """A hub id passes only when its model is cached: marl downloads nothing at run time (a
    download used to start as the policies loaded, and fail 47 s later in a deep OSError)."""
    from huggingface_hub import constants
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # read once, at import
    with pytest.raises(ValueError, match=r"model.path=Qwen/Qwen3-1.7B: not a local directory, and that hub id is not "
                                         rf"in the local Hugging Face cache \({tmp_path}\); marl downloads nothing at "
                                         r"run time. Download it first \(`huggingface-cli download Qwen/Qwen3-1.7B`"):
        settings("model=qwen3_1.7b")
    with pytest.raises(ValueError, match="neither a local directory nor a Hugging Face hub id"):
        settings("model=qwen3_1.7b", "model.path=a/b/c")
    repo = tmp_path / "models--Qwen--Qwen3-1.7B"  # the layout a download leaves
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert settings("model=qwen3_1.7b").model.path == "Qwen/Qwen3-1.7B"


def test_a_saved_config_with_keys_this_version_no_longer_reads_still_loads(tmp_path):
    """marl.evaluate rebuilds a finished run from its config.yaml: keys it held then (older runs:
    tiny_lr at the top level) are not refused there, its values are checked again."""
    c = OmegaConf.to_container(compose_cfg(), resolve=True)
    OmegaConf.save(OmegaConf.create({**c, "tiny_lr": 3e-4}), tmp_path / "config.yaml")
    assert load_run_settings(tmp_path).train.lr == c["train"]["lr"]
    with pytest.raises(ValueError, match="unknown setting tiny_lr"):
        run_settings({**c, "tiny_lr": 3e-4})
    OmegaConf.save(OmegaConf.create({**c, "train": {**c["train"], "steps": "abc"}}), tmp_path / "config.yaml")
    with pytest.raises(ValueError, match="train.steps='abc'; allowed: an integer >= 1"):
        load_run_settings(tmp_path)


# ---- the tiny model's cache directory ------------------------------------------------------------

def test_a_cache_dir_that_cannot_be_written_is_refused_before_the_build(tmp_path, monkeypatch):
    """Under a regular file no directory can be made, for root too; the build (minutes) never starts."""
    from marl import tiny
    monkeypatch.setattr(tiny, "demonstrations", lambda *a, **k: pytest.fail("the build started"))
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=rf"cache_dir={tmp_path}/file/sub: cannot write there \(Not a directory\); "
                                         r"the tiny model this run starts from is not built there yet "
                                         r"\(tiny-[0-9a-f]+\).*Point cache_dir= at a writable directory"):
        tiny.ensure_built([], {"seed": 0, "sft": {}}, str(tmp_path / "file" / "sub"))


def test_a_read_only_cache_dir_is_refused_unless_it_holds_the_model(tmp_path, monkeypatch):
    """A read-only file system (or a directory this user may not write; root writes anyway, so
    the write itself is made to fail, as it does there)."""
    import tempfile

    from marl import tiny
    monkeypatch.setattr(tiny, "demonstrations", lambda *a, **k: pytest.fail("the build started"))
    spec = {"seed": 0, "sft": {}}
    cache = tmp_path / "cache"
    built = cache / f"tiny-{tiny.cache_key(spec)}"
    built.mkdir(parents=True)
    (built / "done.json").write_text("{}")

    def read_only(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    assert tiny.ensure_built([], spec, str(cache)) == built  # a read-only cache holding the model serves
    with pytest.raises(ValueError, match=rf"cache_dir={cache}: cannot write there \(Permission denied\)"):
        tiny.ensure_built([], {**spec, "seed": 1}, str(cache))
