"""End-to-end smoke runs of marl.train on a minute-sized tiny model: assert on the outputs they
produce (metrics, traces, eval.json, checkpoints), resume, and config errors. The default suite
trains one small planning run (conftest's `trained_run`) and shares it; the tests that train runs
of their own or build other tasks' tiny models are in the e2e tier (`python -m pytest -m e2e`)."""
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException

from experiments import team_failures
from marl import train
from marl.build import task_settings
from marl.config import evaluate_settings, run_settings
from roles import make_harness

CONF = str(Path(__file__).resolve().parents[1] / "conf")
SMALL = ["logger=none", "model.sft.steps=30", "model.sft.instances=300", "train.steps=2",
         "train.problems_per_step=3", "train.eval_every=1", "train.checkpoint_every=1",
         "eval.n_val=4", "eval.n_test=4", "algo.k=2", "threads=1"]
TRACE_KEYS = {"problem_id", "turn", "role", "policy", "group_id", "candidate", "prompt", "response",
              "reward", "advantage", "chosen", "parse_ok"}


EXPS = sorted(p.stem for p in (Path(CONF) / "exp").glob("*.yaml"))


def cfg_for(tmp_path, *overrides, exp="planning"):
    """The run's settings, as `python -m marl.train +exp=<exp> <SMALL> <overrides>` makes them."""
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return run_settings(compose("config", overrides=[f"+exp={exp}", f"cache_dir={tmp_path.parent / 'cache'}",
                                                         *SMALL, *overrides]))


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("overrides", [[], pytest.param(["policy=per_role", "harness=single", "algo=grpo",
                                                           "eval.val_samples=2", "eval.val_temperature=1.0"],
                                                          marks=pytest.mark.e2e)],
                         ids=["mas-shared-at_grpo", "single-per_role-grpo-sampled_val"])
def test_train_writes_outputs(tmp_path, overrides, trained_run):
    cfg = cfg_for(tmp_path, *overrides)
    run_dir = trained_run(cfg)

    metrics = rows(run_dir)
    steps = [r["step"] for r in metrics]
    assert steps[0] == 0 and 2 in steps
    step2 = [r for r in metrics if r["step"] == 2 and "train/success" in r][0]
    for key in ("train/reward", "train/success", "adv/zero_std_frac", "timing/rollout", "timing/update",
                "timing/generate", "timing/old_logprob", "timing/log", "system/peak_rss_mb", f"eval/{cfg.task.harness}/val/success", "eval/single/val/success",
                "eval/mas/val/success"):
        assert key in step2 and math.isfinite(step2[key]), key
    assert 0.0 <= step2["adv/zero_std_frac"] <= 1.0
    for r in metrics:
        assert all(k == "step" or k.split("/")[0] in {"train", "adv", "timing", "eval", "role", "system"} for k in r)

    traces = [json.loads(x) for x in (run_dir / "traces" / "step_000002.jsonl").read_text().splitlines()]
    assert traces and all(TRACE_KEYS <= set(t) for t in traces)
    assert all(math.isfinite(t["reward"]) and math.isfinite(t["advantage"]) for t in traces)
    assert {t["role"] for t in traces} == set(cfg.task.harness == "mas" and ["tool", "plan"] or ["plan"])

    ev = json.loads((run_dir / "eval.json").read_text())
    for h in ("single", "mas"):
        for split in ("val", "test"):
            n = 4 * (cfg.eval.val_samples if split == "val" else 1)  # validation sampled val_samples times; test once
            assert ev[h][split]["n"] == ev["warm_start"][split][h]["n"] == n and 0.0 <= ev[h][split]["success"] <= 1.0
            assert 0.0 <= ev["warm_start"][split][h]["success"] <= 1.0
    # selection: the first step with the highest validation success, the warm start (step 0) included
    name = cfg.task.harness
    val = {r["step"]: r[f"eval/{name}/val/success"] for r in metrics if f"eval/{name}/val/success" in r}
    assert sorted(val) == [0, 1, 2]
    best = max(val.values())
    assert ev["final"]["selected_step"] == min(st for st, v in val.items() if v == best)
    assert ev["final"]["selected_val_success"] == best
    # the final figures are the selected checkpoint's: validating it again gives its score (when
    # validation is greedy; sampled validation draws new episodes)
    assert ev["final"]["val"][name]["success"] == ev[name]["val"]["success"]
    if cfg.eval.val_samples == 1:
        assert ev["final"]["val"][name]["success"] == best
    saved = torch.load(run_dir / "checkpoints" / "best" / "state.pt", weights_only=False)
    assert saved["step"] == ev["final"]["selected_step"] and saved["best"]["score"] == best
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_000002"


@pytest.mark.e2e
@pytest.mark.parametrize("exp", [e for e in EXPS if e != "planning"])
def test_every_task_trains_its_team_end_to_end(tmp_path, exp):
    """`+exp=<task>` builds that task's tiny model and trains and evaluates both harnesses."""
    run_dir = tmp_path / "run"
    cfg = cfg_for(tmp_path, exp=exp)
    train.run(cfg, run_dir)
    traces = [json.loads(x) for x in (run_dir / "traces" / "step_000002.jsonl").read_text().splitlines()]
    if exp == "code":
        assert {t["role"] for t in traces} == {"coder", "tester"}
    elif exp == "math":
        assert {t["role"] for t in traces} == {"tool", "reasoner"}
        assert all(t["prompt"].endswith("answer:") for t in traces if t["role"] == "reasoner")
    else:
        assert {t["role"] for t in traces} == {"tool", "plan"}
        tool_prompts = [t["prompt"] for t in traces if t["role"] == "tool"]
        assert all(p.endswith(f"{cfg.task.harness_kw['tool']}:") for p in tool_prompts)
    ev = json.loads((run_dir / "eval.json").read_text())
    for h in ("single", "mas"):
        assert ev[h]["test"]["n"] == 4 and 0.0 <= ev[h]["test"]["success"] <= 1.0
    if exp == "sokoban":  # the failure breakdown reads a move-list task's run directory
        first_turn, solved = team_failures.main(run_dir, "best", n=4)
        assert sum(first_turn.values()) == sum(solved.values()) == 4
        assert {k[2] for k in first_turn} <= {"copy", "naive", "other"}
    _, env_kw, _ = task_settings(cfg)  # the tiny model was built on this task's own text
    specs = [json.loads(d.read_text())["spec"] for d in (tmp_path.parent / "cache").glob("tiny-*/done.json")]
    assert any(s["task"]["env"] == env_kw for s in specs)


@pytest.mark.parametrize("exp", EXPS)
def test_every_exp_composes_into_a_valid_config_with_every_model(exp, tmp_path):
    (tmp_path / "config.json").write_text("{}")  # the weights stood in for (a hub id must be in the local cache)
    with initialize_config_dir(config_dir=CONF, version_base=None):
        for model in ("tiny", f"qwen3_1.7b model.path={tmp_path}"):
            s = run_settings(compose("config", overrides=[f"+exp={exp}", *f"model={model}".split(), "harness=single"]))
            task, _, h_kw = task_settings(s)
            assert task.name == s.task.env
            for h in ("single", "mas"):
                make_harness(task, h, **h_kw)  # every harness builds


@pytest.mark.e2e  # trains on from the shared run
def test_resume_continues_from_checkpoint(tmp_path, trained_run):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run(cfg_for(tmp_path)), run_dir)
    n_before = len(rows(run_dir))
    before = (run_dir / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match="already holds a run; continue it with resume="):
        train.run(cfg_for(tmp_path), run_dir)  # a fresh run never writes over an old one
    assert (run_dir / "metrics.jsonl").read_text() == before
    with open(run_dir / "metrics.jsonl", "a") as f:  # step 3 logged, then killed before its checkpoint
        f.write(json.dumps({"step": 3, "train/success": -1.0}) + "\n")
    train.run(cfg_for(tmp_path, "train.steps=3", f"resume={run_dir}"), run_dir)
    after = rows(run_dir)[n_before:]
    trained = [r["step"] for r in after if "train/success" in r]
    assert trained == [3], "a resumed run continues at the step after the checkpoint, logged once"
    assert all(r.get("train/success") != -1.0 for r in rows(run_dir)), "the killed run's row is dropped"
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_000003"
    assert not (run_dir / "checkpoints" / "step_000002").exists()  # only the newest step is kept


def kill_in_step(monkeypatch, n: int) -> None:
    """The run dies (KeyboardInterrupt, as a Ctrl-C) in step n, after its rollout and update,
    before it writes the step's traces and checkpoint."""
    real = train.write_traces

    def killed(r, step, batch, metrics):
        if step == n - 1:
            raise KeyboardInterrupt("killed")
        real(r, step, batch, metrics)
    monkeypatch.setattr(train, "write_traces", killed)


@pytest.mark.e2e
@pytest.mark.parametrize("policy", ["shared", "lora"])
def test_a_killed_run_resumes_exactly(tmp_path, monkeypatch, policy):
    """Killed during step 2 (after step 1's checkpoint), then resumed: the same metrics, traces
    and eval.json as the run that was never interrupted."""
    args = [f"policy={policy}", "train.steps=2", "eval.warm_start=false"]
    train.run(cfg_for(tmp_path, *args), tmp_path / "whole")
    real = train.write_traces
    kill_in_step(monkeypatch, 2)
    from marl.engine.local import LocalEngine
    closed = []
    monkeypatch.setattr(LocalEngine, "close", lambda self: closed.append(self))
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg_for(tmp_path, *args), tmp_path / "killed")
    assert len(closed) == 1  # the engine (engine=verl: its GPU stacks) is closed however a run ends
    monkeypatch.setattr(train, "write_traces", real)
    assert (tmp_path / "killed" / "checkpoints" / "latest").read_text() == "step_000001"
    train.run(cfg_for(tmp_path, *args, f"resume={tmp_path / 'killed'}"), tmp_path / "killed")
    drop = ("timing/", "system/")
    a, b = ([{k: v for k, v in r.items() if not k.startswith(drop)} for r in rows(tmp_path / d)]
            for d in ("whole", "killed"))
    assert a == b and any("train/grad_norm" in r or "role/plan/grad_norm" in r for r in a)
    for f in ("traces/step_000002.jsonl", "eval.json"):
        assert (tmp_path / "whole" / f).read_text() == (tmp_path / "killed" / f).read_text(), f


@pytest.mark.e2e
def test_first_run_equals_cached_run(tmp_path):
    """The run that builds the tiny model and the one that loads it from the cache are the same."""
    own_cache = [f"cache_dir={tmp_path / 'own_cache'}", "eval.warm_start=false", "train.eval_every=10"]
    train.run(cfg_for(tmp_path, *own_cache), tmp_path / "first")
    assert (tmp_path / "own_cache").exists()
    train.run(cfg_for(tmp_path, *own_cache), tmp_path / "second")
    drop = ("timing/", "system/")
    a, b = ([{k: v for k, v in r.items() if not k.startswith(drop)} for r in rows(tmp_path / d)]
            for d in ("first", "second"))
    assert a == b and any("train/reward" in r for r in a)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint"):
        train.run(cfg_for(tmp_path, f"resume={tmp_path / 'nothing'}"), tmp_path / "run")


@pytest.mark.parametrize("model", ["qwen3_1.7b", "qwen3_8b"])
def test_a_models_training_budget_is_not_overridden(model):
    """model=qwen3_* carries the paper's lr/steps/temperature; neither the base config nor
    +exp=planning (whose tiny budget lives in model/tiny.yaml) may silently replace them."""
    with initialize_config_dir(config_dir=CONF, version_base=None):
        for extra in ([], ["+exp=planning"]):
            cfg = compose("config", overrides=[*extra, f"model={model}"])
            assert (cfg.train.lr, cfg.train.steps, cfg.train.temperature) == (5e-6, 200, 1.5)
        tiny = compose("config", overrides=["+exp=planning"])
        assert (tiny.train.lr, tiny.train.steps, tiny.train.mini_batch) == (3e-4, 60, 128)
        assert (tiny.eval.val_temperature, tiny.eval.val_samples) == (0.0, 1)
        for exp in ("code", "math"):  # the paper's train temperature for code and maths
            assert compose("config", overrides=[f"+exp={exp}", f"model={model}"]).train.temperature == 1.0
        maths = compose("config", overrides=["+exp=math", f"model={model}"]).eval
        assert (maths.val_temperature, maths.val_samples, maths.temperature) == (0.6, 5, 0.0)
        tiny_maths = compose("config", overrides=["+exp=math"])  # the tiny model keeps greedy validation
        assert (tiny_maths.train.temperature, tiny_maths.eval.val_samples) == (1.0, 1)
        # an experiment's per-model settings (per_model.<model>) give way to the command line
        tiny_code = compose("config", overrides=["+exp=code"])
        assert (tiny_code.train.lr, tiny_code.train.steps, tiny_code.model.max_new_tokens) == (1e-4, 100, 64)
        assert compose("config", overrides=["+exp=code", "train.lr=5e-4"]).train.lr == 5e-4
        assert compose("config", overrides=["+exp=math", f"model={model}", "eval.val_samples=3"]).eval.val_samples == 3


def test_unknown_config_name_lists_choices(tmp_path):
    """As a user meets it: the command exits with Hydra's message naming the missing config and
    listing the group's options (one per line), not a traceback."""
    proc = subprocess.run([sys.executable, "-m", "marl.train", "+exp=planning", "harness=nope"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    assert "Could not find 'harness/nope'" in proc.stderr
    assert re.search(r"Available options in 'harness':\s+mas\s+single\s", proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("group, options", [("policy", ["lora", "per_role", "shared"]), ("engine", ["local", "openai", "verl"]),
                                            ("family", ["code", "math", "planning"]),
                                            ("env", ["aime24", "aime25", "apps", "code", "codecontests", "livecodebench",
                                                     "math", "olympiadbench", "planpath", "planpath10", "polaris",
                                                     "sokoban", "sudoku", "sudoku9"])])
def test_every_config_group_refuses_an_unknown_name_with_its_options(group, options):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        with pytest.raises(MissingConfigException) as e:
            compose("config", overrides=["+exp=planning", f"{group}=nope"])
    assert f"Could not find '{group}/nope'" in str(e.value)
    assert re.search(rf"Available options in '{group}':\s+" + r"\s+".join(options) + r"\nConfig search path", str(e.value)), str(e.value)


@pytest.mark.parametrize("overrides, msg", [
    (["model=qwen3_1.7b", "model.path=/nonexistent"],
     r"model.path=/nonexistent: does not exist. Pass a local Hugging Face model directory .* or model=tiny"),
    (["device=cuda"], r"device=cuda, but torch .* sees no CUDA GPU .*Run with device=cpu"),
    (["device=tpu"], r"device='tpu'; allowed: cpu, cuda, cuda:<index>"),
    (["engine.name=ray"], r"unknown engine 'ray'; registered: local, openai, verl$"),
    (["eval.val_samples=5"], r"eval.val_samples .* > 1 only with eval.val_temperature > 0 .*val_samples=5, "
                             r"val_temperature=0.0")])
def test_bad_model_path_and_device_are_refused_before_anything_is_built(tmp_path, monkeypatch, overrides, msg):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without CUDA
    built = []
    monkeypatch.setattr(train, "build_run", lambda *a, **k: built.append(1))
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose("config", overrides=["+exp=planning", *overrides])
    with pytest.raises(ValueError, match=msg):
        train.run(run_settings(cfg), tmp_path / "run")  # refused as the settings are made, once
    assert not built and not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, msg", [("train.old_logprob=never", "allowed: auto, recompute"),
                                           ("algo.k=1", "algo.k must be >= 2"),
                                           ("eval.harnesses=[single,chess]", "unknown harness 'chess'"),
                                           ("algo.name=ppo", "unknown algo 'ppo'; allowed: at_grpo, grpo$"),
                                           ("logger.name=tb", "unknown logger 'tb'; allowed: wandb, none$"),
                                           ("policy.name=moe", "unknown policy 'moe'; allowed: shared, per_role, lora$")])
def test_settings_name_the_bad_value_and_what_is_allowed(override, msg):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose("config", overrides=["+exp=planning", override])
    with pytest.raises(ValueError, match=msg):
        run_settings(cfg)


@pytest.mark.e2e  # trains a per-role run of its own
@pytest.mark.parametrize("policy", ["per_role", "lora"])
def test_evaluate_swaps_per_role_policies_and_writes_results(tmp_path, policy, trained_run):
    from marl import evaluate

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run(cfg_for(tmp_path, f"policy={policy}", "train.steps=1")), run_dir)
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose("evaluate", overrides=[f"run={run_dir}", "n=4", "samples=2", "temperature=1.0",
                                             "swap_roles=true", "splits=[val,test]", "threads=1"])
    res = evaluate.run(evaluate_settings(cfg))
    saved = json.loads((run_dir / "evaluate.json").read_text())
    assert saved == json.loads(json.dumps(res))
    team = saved["mas"]["test"]
    assert team["roles"] == {"tool": "plan", "plan": "tool"}
    assert saved["single"]["val"]["roles"] == {"plan": "tool"}  # the single agent's role, swapped
    for r in (saved["mas"]["val"], team, saved["single"]["test"]):
        assert r["n"] == 8 and r["samples"] == 2  # 4 problems x 2 samples
        lo, hi = r["ci95"]
        assert 0.0 <= lo <= r["success"] <= hi <= 1.0
        assert r["pass@1"] == pytest.approx(r["success"]) and r["pass@1"] <= r["pass@2"] <= 1.0


def test_evaluate_rejects_unknown_roles_and_greedy_resampling(tmp_path, trained_run):
    from marl import evaluate

    run_dir = trained_run(cfg_for(tmp_path))  # refused before anything is written
    for overrides, msg in [(["+roles.coder=shared"], "no such role"), (["samples=3"], "temperature"),
                           (["harnesses=[chess]"], "unknown harness")]:
        with initialize_config_dir(config_dir=CONF, version_base=None):
            cfg = compose("evaluate", overrides=[f"run={run_dir}", "n=2", "threads=1", *overrides])
        with pytest.raises(ValueError, match=msg):
            evaluate.run(evaluate_settings(cfg))


def test_team_failures_reads_a_trained_run(tmp_path, trained_run):
    """experiments.team_failures on the shared planning run: every validation problem counted once
    in the first-turn breakdown and once among the solved/unsolved."""
    first_turn, solved = team_failures.main(trained_run(cfg_for(tmp_path)), "best", n=4)
    assert sum(first_turn.values()) == sum(solved.values()) == 4
    assert {k[2] for k in first_turn} <= {"copy", "naive", "other"}
    assert {k[0] for k in first_turn} <= {"tool right", "tool wrong"} and {k[0] for k in solved} <= {"short", "long"}


@pytest.mark.parametrize("max_moves", [6, None])
def test_sokoban_tool_field_follows_the_longest_solution(max_moves):
    """+exp=sokoban sizes the tool's answer field by env.max_moves; unbounded = no field."""
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose("config", overrides=["+exp=sokoban", f"env.max_moves={'null' if max_moves is None else max_moves}"])
    task, _, h_kw = task_settings(run_settings(cfg))
    assert h_kw["field"] == max_moves
    h = make_harness(task, "mas", **h_kw)
    for i in range(10):
        state = h.reset(task.instance("val", i))
        out = h.act_sync(state, "tool", h.role("tool").demo(state))
        items = out.state.tool_output.split()
        moves = [m for m in items if m != "."]
        assert out.local == 1.0 and len(items) == (max_moves or len(moves))


class _AttackClient:
    """The engine's client, except that the first `len(attacks)` coder requests answer with the
    attack programs (token ids from the run's own tokenizer), as if the policy had written them."""

    def __init__(self, inner, tok, attacks: list[str]):
        self.inner, self.tok, self.attacks = inner, tok, attacks

    async def generate(self, prompt_ids, temperature, request_id=None, prompt=None):
        from marl.types import Completion
        c = await self.inner.generate(prompt_ids, temperature, request_id=request_id)
        if not self.tok.decode(prompt_ids).rstrip().endswith("program:") or not self.attacks:
            return c
        text = self.attacks.pop(0)
        ids = self.tok.encode(text) + [self.tok.eos_token_id]
        return Completion(ids, [0.0] * len(ids), text)  # old log-probs: recomputed on-policy by the update


@pytest.mark.e2e
def test_a_training_step_with_attack_programs_among_the_candidates_completes(tmp_path, monkeypatch):
    """Every attack of sandbox/attacks.py among the coder's first candidates of a real training
    step (rollout, advantages, update, validation, checkpoint): the step completes, each attack is
    scored as a program that passes nothing, their samples train with finite advantages, and none
    of them reached what it aimed at on the host."""
    from marl.engine.local import LocalEngine
    from sandbox.attacks import ATTACKS, close_probe, gone, open_probe

    probe = open_probe()
    comm = "marl-train-attack"
    attacks = [f"def f(x):\n    pass\n{a.code.format(**probe.fields(comm))}" for a in ATTACKS]
    pending = list(attacks)
    real = LocalEngine.client
    monkeypatch.setattr(LocalEngine, "client", lambda self, pid: _AttackClient(real(self, pid), self.tokenizer, pending))
    monkeypatch.setenv("MARL_PROBE_SECRET", probe.secret)
    try:
        run_dir = tmp_path / "run"
        train.run(cfg_for(tmp_path, "train.steps=1", f"train.problems_per_step={-(-len(attacks) // 4)}", "algo.k=4",  # a first candidate per attack
                          "eval.warm_start=false", exp="code"), run_dir)
        assert not pending, "every attack was among the candidates"
        traces = [json.loads(x) for x in (run_dir / "traces" / "step_000001.jsonl").read_text().splitlines()]
        hit = [t for t in traces if t["response"] in attacks]
        assert len(hit) == len(attacks) and all(t["role"] == "coder" and t["turn"] == 0 for t in hit)
        assert [(t["parse_ok"], t["local"], t["reward"]) for t in hit] == [(True, 0.0, 0.0)] * len(hit)
        assert all(math.isfinite(t["advantage"]) for t in traces)
        step1 = [r for r in rows(run_dir) if r["step"] == 1 and "train/grad_norm" in r][0]
        assert math.isfinite(step1["train/pg_loss"]) and math.isfinite(step1["train/grad_norm"])
        assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_000001"
        # nothing reached the host: no write outside, the canary and the listener untouched, no
        # process of theirs left (the trainer, which one of them tried to kill, ran to the end)
        assert not any(probe.outside.iterdir()) and probe.canary.read_text() == probe.secret
        assert probe.accepted() == 0
        assert gone(comm) is not None
    finally:
        close_probe(probe)


def test_the_checkpoints_trainer_state_keeps_its_format():
    """`best` is saved as the plain dict checkpoints held before `Best` existed, so old
    checkpoints resume and new ones load in older code."""
    import random
    from types import SimpleNamespace

    r = SimpleNamespace(best=train.Best(0.5, 3), rng=random.Random(0))
    state = train.trainer_state(r)
    assert state["best"] == {"score": 0.5, "step": 3} and state["trainer_rng"] is r.rng
    assert train.Best(**state["best"]) == r.best
