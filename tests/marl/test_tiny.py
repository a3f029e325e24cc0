"""The tiny model's build: sequence packing for SFT gives exactly the loss of the sequences taken
one by one (attention never crosses a packed boundary), the cache key ignores build speed, and
the warm-start demonstrations cover every harness and mix oracle and naive targets as asked."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import Qwen3Config, Qwen3ForCausalLM

from marl import tiny
from marl.build import model_path, task_settings, warm_start_spec
from marl.config import run_settings
from marl.tiny import cache_key, demonstrations, pack

PAD = 0


def model(seed=0):
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=20, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=16, intermediate_size=64, max_position_embeddings=64,
                      pad_token_id=PAD, eos_token_id=1, bos_token_id=1, tie_word_embeddings=True,
                      initializer_range=0.4)
    return Qwen3ForCausalLM(cfg).eval()


def random_pairs(n, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        p, r = torch.randint(2, 9, (2,), generator=g).tolist()
        out.append((torch.randint(2, 20, (p,), generator=g).tolist(), torch.randint(2, 20, (r,), generator=g).tolist()))
    return out


def one_by_one_loss(m, data):
    """Summed response-token cross-entropy, each sequence in a batch of its own."""
    total = 0.0
    for p, r in data:
        logits = m(input_ids=torch.tensor([p + r])).logits[0]  # (L, V)
        total += F.cross_entropy(logits[len(p) - 1:-1], torch.tensor(r), reduction="sum").item()
    return total


@pytest.mark.parametrize("width", [17, 24, 64])
def test_packed_loss_equals_one_by_one(width):
    m, data = model(), random_pairs(12, seed=width)
    ids, labels, pos = pack(data, width, PAD)
    assert ids.shape[1] <= width and ids.shape[0] < len(data)  # several sequences share a row
    assert (labels != -100).sum().item() == sum(len(r) for _, r in data)  # every target, once
    with torch.no_grad():
        logits = m(input_ids=ids, position_ids=pos, use_cache=False).logits  # (rows, W, V)
    packed = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                             reduction="sum").item()
    assert packed == pytest.approx(one_by_one_loss(m, data), rel=1e-5)


def test_pack_rejects_a_sequence_longer_than_a_row():
    with pytest.raises(ValueError, match="does not fit a row of 4"):
        pack([([2, 3, 4], [5, 6])], 4, PAD)


def test_cache_key_ignores_threads_only():
    spec = {"seed": 0, "sft": {"steps": 10, "threads": 1}}
    assert cache_key(spec) == cache_key({**spec, "sft": {"steps": 10, "threads": 2}})
    assert cache_key(spec) != cache_key({**spec, "sft": {"steps": 11, "threads": 1}})


@pytest.mark.parametrize("what, value", [("torch", "2.12.0+cpu"), ("transformers", "5.9.0"), ("cpu_kernels", "AVX2")])
def test_cache_key_changes_with_the_numerics_of_another_machine(monkeypatch, what, value):
    """A cache built under another torch, transformers or CPU kernel path (AVX2 vs AVX-512) has
    other numbers: its key differs, so it is rebuilt rather than silently reused."""
    spec = {"model": {"hidden_size": 8}, "sft": {"steps": 10}}
    here = tiny.numerics()
    assert here["cpu_kernels"] == torch.backends.cpu.get_cpu_capability() and here["torch"] == torch.__version__
    key = cache_key(spec)
    monkeypatch.setattr(tiny, "numerics", lambda: {**here, what: value})
    assert cache_key(spec) != key


@pytest.mark.parametrize("task_name", __import__("envs").registered())
def test_demonstrations_cover_every_harness_and_stop_at_dead_ends(task_name):
    """Warm-start data of every task: targets parse, both harnesses and all roles appear, and an
    episode that reaches a dead end (a naive Sokoban push into a corner) ends there, not in a crash."""
    import envs
    from roles import harness_names, make_harness

    task = envs.make(task_name)
    hs = [make_harness(task, n) for n in harness_names(task_name)]
    pairs = list(demonstrations(hs, range(300), noise=0.15, seed=0, oracle_frac=0.5))
    def cue(r):  # the line a role's prompt ends with
        known = {"plan": "plan:", "coder": "program:", "tester": "tests:", "reasoner": "answer:"}
        # a planning tool agent's prompt ends with its tool's name; the maths tool agent's with "program:"
        return known.get(r.name) or (f"{r.tool}:" if hasattr(r, "tool") else "program:")

    assert {p.rsplit("\n", 1)[-1] for p, _ in pairs} == {cue(r) for h in hs for r in h.roles}
    parsers = {cue(r): r.parse for h in hs for r in h.roles}
    assert all(parsers[p.rsplit("\n", 1)[-1]](t).ok for p, t in pairs)


def test_demonstrations_mix_oracle_and_naive_targets_in_proportion():
    """oracle_frac=1 gives only oracle targets; 0 only naive ones; 0.5 about half of each where
    the two differ."""
    import envs
    from roles import make_harness

    task = envs.make("planpath")
    hs = [make_harness(task, "mas"), make_harness(task, "single")]

    def shares(frac):
        oracle = naive = 0
        by_prompt = {}
        for h in hs:
            for i in range(40):  # replay each harness's demonstrations to classify targets
                state = h.reset(h.task.instance("train", i))
                for name in h.role_names:
                    by_prompt[h.prompt(state, name)] = (h.role(name).demo(state), h.role(name).naive(state))
        for p, r in demonstrations(hs, range(40), 0.0, 0, oracle_frac=frac):
            if p in by_prompt and by_prompt[p][0] != by_prompt[p][1]:
                oracle += r == by_prompt[p][0]
                naive += r == by_prompt[p][1]
        return oracle, naive

    o1, n1 = shares(1.0)
    o0, n0 = shares(0.0)
    oh, nh = shares(0.5)
    assert n1 == 0 and o1 > 20 and o0 == 0 and n0 > 20
    assert 0.3 < oh / (oh + nh) < 0.7


# --- what the warm start is built from (issue 27: one warm start per sweep) -------------------

CONF = Path(__file__).resolve().parents[2] / "conf"
DEFAULT_EXPS = ("planning", "sokoban", "sudoku", "code", "math")


def composed(exp: str, *overrides: str, cache_dir: str = "/nonexistent/cache"):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return run_settings(compose("config", overrides=[f"+exp={exp}", "logger=none", f"cache_dir={cache_dir}",
                                                         *overrides]))


def warm_start(s, monkeypatch) -> tuple[str, list, dict]:
    """(model_path, the harnesses and spec the build would get) of run settings `s`, building nothing."""
    seen = {}

    def ensure_built(harnesses, spec, cache_dir, log=print):
        seen.update(harnesses=harnesses, spec=spec)
        return Path(cache_dir) / f"tiny-{cache_key(spec)}"
    monkeypatch.setattr(tiny, "ensure_built", ensure_built)
    task, env_kw, h_kw = task_settings(s)
    return model_path(s, task, h_kw, env_kw, log=lambda *a: None), seen["harnesses"], seen["spec"]


def test_every_task_and_harness_family_declares_its_rl_time_settings_with_defaults_on_file():
    import envs
    from roles import harness_family

    assert set(tiny.RL_TIME_ENV) == set(envs.registered(from_files=True))
    families = {harness_family(t).name for t in envs.registered(from_files=True)}
    assert set(tiny.RL_TIME_HARNESS) == families
    for task_name, keys in tiny.RL_TIME_ENV.items():
        env = OmegaConf.load(CONF / "env" / f"{task_name}.yaml")
        assert env.name == task_name and all(k in env for k in keys), task_name
    for conf, keys in tiny.RL_TIME_HARNESS.values():
        family = OmegaConf.load(CONF / "family" / f"{conf}.yaml")
        assert all(k in family for k in keys), conf


@pytest.mark.parametrize("exp", DEFAULT_EXPS)
def test_the_default_settings_are_built_as_set_so_the_cached_models_keep_their_keys(exp):
    s = composed(exp)
    _, env_kw, h_kw = task_settings(s)
    assert tiny.build_settings(s.task.env, env_kw, h_kw) == (env_kw, h_kw)


@pytest.mark.parametrize("exp, override", [
    ("planning", "harness.max_turns=1"), ("planning", "env.rewards.goal=2.0"), ("planning", "harness.tool_timeout_s=0.5"),
    ("planning", "harness.parse_penalty=-1.0"), ("sokoban", "env.rewards.dead=1.0"), ("sudoku", "harness.max_turns=8"),
    ("code", "harness.max_turns=2"), ("code", "env.rewards.pass=2.0"), ("math", "harness.max_turns=1"),
])
def test_runs_differing_in_an_rl_time_setting_start_from_one_warm_start(exp, override, monkeypatch):
    """Before: each had a cache key (and a warm start) of its own. The build gets the harnesses at
    the family's defaults (max_turns included), so the model matches its key."""
    from roles import harness_family

    s = composed(exp)
    path, harnesses, spec = warm_start(s, monkeypatch)
    path_b, harnesses_b, spec_b = warm_start(composed(exp, override), monkeypatch)
    assert path_b == path and spec_b == spec
    conf = tiny.RL_TIME_HARNESS[harness_family(s.task.env).name][0]
    family_max_turns = OmegaConf.load(CONF / "family" / f"{conf}.yaml").max_turns
    assert [h.max_turns for h in harnesses_b] == [h.max_turns for h in harnesses] == [family_max_turns] * 2
    assert [h.parse_penalty for h in harnesses_b] == [h.parse_penalty for h in harnesses]
    assert vars(harnesses_b[0].task.rewards) == vars(harnesses[0].task.rewards)


@pytest.mark.parametrize("exp, override", [
    ("planning", "env.size=6"), ("planning", "env.seed=1"), ("planning", "harness.field=5"),
    ("planning", "harness.tool=program"), ("planning", "harness.instructions=true"), ("sudoku", "env.holes=6"),
    ("code", "env.max_len=4"), ("math", "env.hi=50"),
])
def test_a_build_time_setting_gives_another_warm_start(exp, override, monkeypatch):
    assert warm_start(composed(exp, override), monkeypatch)[0] != warm_start(composed(exp), monkeypatch)[0]


@pytest.mark.parametrize("task_name, env_kw, h_kw", [
    ("planpath", {"rewards": {"goal": 3.0, "invalid": -1.0}}, {"parse_penalty": -2.0, "tool_timeout_s": 0.5}),
    ("sokoban", {"rewards": {"dead": 0.5, "progress": 0.0}}, {"parse_penalty": 0.0}),
    ("code", {"rewards": {"pass": 5.0}}, {"parse_penalty": -3.0}),
    ("math", {"rewards": {"right": 0.1}}, {"parse_penalty": -3.0}),
])
def test_rewards_and_limits_do_not_shape_the_demonstrations(task_name, env_kw, h_kw):
    """What makes them RL-time: the demonstrations (and so the tokenizer's texts and the SFT data)
    are oracle and naive text, whatever it scores."""
    import envs
    from roles import harness_names, make_harness

    def pairs(e_kw, hk):
        task = envs.make(task_name, **e_kw)
        return list(demonstrations([make_harness(task, n, **hk) for n in harness_names(task_name)], range(12),
                                   noise=0.15, seed=0, oracle_frac=0.5))
    assert pairs(env_kw, h_kw) == pairs({}, {})


def test_a_run_is_told_where_the_warm_start_of_its_rl_time_settings_from_before_is(tmp_path, monkeypatch):
    """Runs made before the RL-time settings left the build started from a model keyed by them:
    evaluating or resuming one needs that model, so a run with those settings names it."""
    s = composed("planning", "harness.max_turns=2", cache_dir=str(tmp_path))
    task, env_kw, h_kw = task_settings(s)
    older = tmp_path / f"tiny-{cache_key(warm_start_spec(s, env_kw, h_kw))}"
    older.mkdir()
    (older / "done.json").write_text("{}")
    monkeypatch.setattr(tiny, "ensure_built", lambda harnesses, spec, cache_dir, log: Path(cache_dir) / "new")
    logged = []
    model_path(s, task, h_kw, env_kw, log=logged.append)
    assert len(logged) == 1 and f"evaluate or resume those with model.path={older}" in logged[0]
    default = composed("planning", cache_dir=str(tmp_path))  # its warm start is the one it always had
    task, env_kw, h_kw = task_settings(default)
    model_path(default, task, h_kw, env_kw, log=logged.append)
    assert len(logged) == 1
