"""marl.evaluate's pure parts: pass@k, the confidence interval; the role -> policy routing; its settings
and the task it evaluates on (another of the run's family, `env=`), checked before the model loads."""
import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from eval_sets import maths_files
from hydra import compose, initialize_config_dir

from marl.config import evaluate_settings, run_settings, save_run_settings
from marl.evalstats import pass_at_k, wilson
from marl.routing import Routing, policy_ids


@pytest.mark.parametrize("n, c, k", [(4, 0, 1), (4, 1, 1), (4, 2, 2), (5, 3, 2), (6, 1, 4), (8, 8, 8), (3, 2, 3)])
def test_pass_at_k_equals_brute_force_over_subsets(n, c, k):
    outcomes = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    brute = sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(brute)


def test_pass_at_k_needs_enough_samples():
    with pytest.raises(ValueError, match="at least 4 samples"):
        pass_at_k(2, 1, 4)


def test_wilson_interval_holds_the_estimate_and_covers_at_the_nominal_rate():
    rng = random.Random(0)
    for s, n in [(0, 10), (10, 10), (37, 100), (1, 3)]:
        lo, hi = wilson(s, n)
        assert 0.0 <= lo <= s / n <= hi <= 1.0
    p, n, hits = 0.3, 100, 0
    for _ in range(400):
        lo, hi = wilson(sum(rng.random() < p for _ in range(n)), n)
        hits += lo <= p <= hi
    assert 0.90 <= hits / 400 <= 0.99  # ~95% coverage


def test_routing_default_swap_and_explicit():
    team = ["tool", "plan"]
    for kind in ("per_role", "lora"):  # a policy per role: each plays its own
        default = Routing.default(kind, team, team)
        assert default.as_dict() == {"tool": "tool", "plan": "plan"}
        assert default.swapped(policy_ids(kind, team)).as_dict() == {"tool": "plan", "plan": "tool"}
        # a harness without the tool role: the plan agent's policy plays it, and swapping hands it the tool's
        single = Routing.default(kind, team, ["plan"])
        assert single.as_dict() == {"plan": "plan"} and single.swapped(("tool", "plan")).as_dict() == {"plan": "tool"}
    assert Routing.default("per_role", ["tool", "plan"], ["tool", "plan"]).override(
        {"tool": "plan"}, ("tool", "plan")).as_dict() == {"tool": "plan", "plan": "plan"}
    # a trained single agent's policy ("plan") plays the tool role it never had
    assert Routing.default("per_role", ["plan"], team).as_dict() == {"tool": "plan", "plan": "plan"}
    # one shared policy plays every role
    assert Routing.default("shared", ["plan"], team).as_dict() == {"tool": "shared", "plan": "shared"}
    assert policy_ids("shared", team) == ("shared",) and policy_ids("lora", team) == ("tool", "plan")


def test_routing_is_immutable_and_errors_name_what_exists():
    r = Routing.default("shared", ["tool", "plan"], ["tool", "plan"])
    with pytest.raises(TypeError):
        r.roles["tool"] = "other"
    with pytest.raises(ValueError, match="two per-role policies, the run has \\['shared'\\]"):
        r.swapped(("shared",))
    with pytest.raises(ValueError, match="roles.coder: no such role here; roles: \\['plan'\\]"):
        Routing({"plan": "plan"}).override({"coder": "plan"}, ("plan",))
    with pytest.raises(ValueError, match="roles.plan=critic: no such policy in the run; policies: \\['tool', 'plan'\\]"):
        Routing({"tool": "tool", "plan": "plan"}).override({"plan": "critic"}, ("tool", "plan"))


# ---- marl.evaluate's settings and the task it evaluates on, checked before the model loads ----------

CONF = str(Path(__file__).resolve().parents[2] / "conf")
ROOT = Path(__file__).resolve().parents[2]


def saved_run(tmp_path, *overrides, exp="planning") -> Path:
    """A run directory as marl.train leaves it, less the weights: its config.yaml and a best
    checkpoint whose state.pt lists no files (every check below runs before a weight is read)."""
    with initialize_config_dir(config_dir=CONF, version_base=None):
        s = run_settings(compose("config", overrides=[f"+exp={exp}", f"cache_dir={tmp_path / 'cache'}",
                                                      "logger=none", *overrides]))
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "best").mkdir(parents=True)
    torch.save({"step": 0, "files": []}, run_dir / "checkpoints" / "best" / "state.pt")
    save_run_settings(s, run_dir)
    return run_dir


def settings(run_dir, *overrides):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return evaluate_settings(compose("evaluate", overrides=[f"run={run_dir}", "threads=1", *overrides]))


def cli(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m marl.evaluate <args>` with this checkout's code, run in `cwd` (Hydra writes
    evaluate.log there)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "marl.evaluate", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def lcb_files(d: Path) -> Path:
    """A LiveCodeBench-shaped data set (release files test.jsonl .. test6.jsonl) of two stdin problems."""
    d.mkdir(parents=True, exist_ok=True)
    tests = [{"input": "3 4\n", "output": "7\n", "testtype": "stdin"}]
    rows = [{"question_title": q, "question_content": f"Read two integers and print their sum ({q}).",
             "platform": "atcoder", "question_id": q, "contest_id": "c", "contest_date": "2024-06-01T00:00:00",
             "starter_code": "", "difficulty": "easy", "public_test_cases": json.dumps(tests),
             "private_test_cases": json.dumps(tests), "metadata": "{}"} for q in ("a", "b")]
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for i in range(2, 7):
        (d / f"test{i}.jsonl").write_text("")
    return d


@pytest.mark.parametrize("override, msg", [
    ("n=-3", r"n=-3; allowed: an integer >= 1, or null"), ("n=0", "n=0; allowed: an integer >= 1"),
    ("n=abc", "n='abc'; allowed: an integer"), ("samples=0", "samples=0; allowed: an integer >= 1"),
    ("temperature=-1", "temperature=-1; allowed: a finite number >= 0"),
    ("temperature=nan", "temperature=nan; allowed: a finite number"), ("temperature=inf", "finite number >= 0"),
    ("threads=-1", "threads=-1; allowed: an integer >= 0"), ("seed=abc", "seed='abc'; allowed: an integer"),
    ("swap_roles=maybe", "swap_roles='maybe'; allowed: true or false"), ("splits=[]", "non-empty list"),
    ("splits=[dev]", "unknown split 'dev'; allowed: train, val, test"), ("harnesses=[mas,mas]", "without repeats"),
    ("checkpoint=bestt", "checkpoint=bestt: .*allowed: best, latest, a checkpoint directory or a name under"),
    ("+foo=1", r"unknown setting foo \(no code reads it; a misspelling added with \+\?\); the top level holds: run, checkpoint"),
])
def test_evaluate_refuses_a_bad_setting_naming_what_is_allowed(tmp_path, override, msg):
    with pytest.raises(ValueError, match=msg):
        settings(saved_run(tmp_path), override)


def test_an_env_outside_the_runs_harness_family_is_refused(tmp_path):
    planning = saved_run(tmp_path / "p")
    with pytest.raises(ValueError, match="env=aime24 is a maths task, but the run in .* trained on planpath, a planning "
                                         "task.*allowed env: planpath, sokoban, sudoku"):
        settings(planning, "env=aime24", "env.data_dir=/data")
    maths = saved_run(tmp_path / "m", exp="math")
    with pytest.raises(ValueError, match="env=livecodebench is a code task.*allowed env: aime24, aime25, math, "
                                         "olympiadbench, polaris"):
        settings(maths, "env=livecodebench", "env.data_dir=/data")
    # options without a task are no task (Hydra's hint after env.data_dir=... alone)
    with pytest.raises(ValueError, match="choose the task with env=<name>.*env=aime24 env.data_dir=<dir>"):
        settings(maths, "+env.data_dir=/data")
    # the plain run's settings carry no env: it evaluates its own task
    assert settings(maths).env is None and settings(maths).task == settings(maths).trained.task


def test_appended_env_is_refused_with_the_form_that_works(tmp_path):
    """`+env=aime24` is Hydra's hint where `env` is no group; here it is one, and Hydra's own
    refusal ("Multiple values for env") does not say what to write."""
    proc = cli(tmp_path, f"run={saved_run(tmp_path, exp='math')}", "+env=aime24", "+env.data_dir=/data")
    assert proc.returncode != 0
    assert "+env=aime24: env is a group of marl.evaluate's config already" in proc.stderr
    assert "without '+': env=aime24 env.data_dir=<dir>" in proc.stderr
    # an env option without the env (Hydra's hint, +env.data_dir=..., would name no task)
    from marl.evaluate import refuse_misplaced_env
    with pytest.raises(SystemExit, match="env.data_dir=/data: choose the task first, then set its options: "
                                         "env=<name> env.data_dir=/data"):
        refuse_misplaced_env(["run=r", "env.data_dir=/data"])
    refuse_misplaced_env(["run=r", "env=aime24", "env.data_dir=/data"])  # the documented form passes


@pytest.mark.parametrize("override, msg", [
    ("+roles.plan=foo", r"roles.plan=foo: no such policy in the run; policies: \['shared'\]"),
    ("swap_roles=true", r"swap_roles needs exactly two per-role policies, the run has \['shared'\]"),
    ("out={file}/o.json", r"out=.*file: cannot write there \(File exists\)"),
])
def test_names_and_the_output_are_checked_before_the_model_loads(tmp_path, override, msg):
    """Each used to be refused (out=: to fail with a raw NotADirectoryError) only after the model
    was built and loaded, or the whole evaluation had run."""
    from marl import evaluate

    run_dir = saved_run(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=msg):
        evaluate.run(settings(run_dir, override.format(file=tmp_path / "file")))
    assert not (tmp_path / "cache").exists()  # no model built


def test_a_checkpoint_missing_a_file_is_refused_with_the_settings(tmp_path):
    run_dir = saved_run(tmp_path)
    torch.save({"step": 0, "files": ["policy_shared.pt"]}, run_dir / "checkpoints" / "best" / "state.pt")
    with pytest.raises(ValueError, match=r"best is incomplete: policy_shared.pt missing"):
        settings(run_dir)


def test_an_evaluation_on_another_env_keeps_the_runs_own_results(tmp_path):
    run_dir = saved_run(tmp_path, exp="math")
    assert settings(run_dir).out == run_dir / "evaluate.json"
    data = maths_files(tmp_path / "aime24")
    assert settings(run_dir, "env=aime24", f"env.data_dir={data}").out == run_dir / "evaluate_aime24.json"


def test_a_benchmarks_splits_and_size_are_checked_before_the_model_loads(tmp_path):
    from marl import evaluate

    run_dir, data = saved_run(tmp_path, exp="math"), maths_files(tmp_path / "aime24")
    for overrides, msg in [(["splits=[val]"], r"splits=\['val'\]: aime24 .* has no usable val split: .*test split only"),
                           (["n=5"], "n=5, but the test split of aime24 holds 2 problems .*set n <= 2, or n=null"),
                           (["+env.foo=1"], r"unknown env option\(s\) env.foo for env=aime24; allowed: data_dir")]:
        e = settings(run_dir, "env=aime24", f"env.data_dir={data}", *overrides)
        with pytest.raises(ValueError, match=msg):
            evaluate.run(e)
    assert not (tmp_path / "cache").exists() and not (run_dir / "evaluate.json").exists()  # no model, no output
    e = settings(run_dir, "env=aime24", f"env.data_dir={data}")
    task, harnesses, sizes = evaluate.evaluated_task(e)
    assert (task.name, sizes, sorted(harnesses)) == ("aime24", {"test": 2}, ["mas", "single"])
    assert e.task.harness_kw == e.trained.task.harness_kw  # the run's harness settings, on the other task


def test_a_polaris_run_evaluates_on_its_own_test_sets(tmp_path):
    """A run trained on Polaris tests on its env.test_sets: n=null (the default) takes them all,
    the README's n=100 against two 2-problem sets is refused before the model loads."""
    from marl import evaluate

    polaris = tmp_path / "polaris"
    polaris.mkdir()
    (polaris / "polaris-data-53K.jsonl").write_text("".join(
        json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(50)))
    sets = f"{{aime24:{{data_dir:{maths_files(tmp_path / 'a24')}}},aime25:{{data_dir:{maths_files(tmp_path / 'a25')}}}}}"
    run_dir = saved_run(tmp_path, "env=polaris", f"env.data_dir={polaris}", f"env.test_sets={sets}", exp="math")
    assert evaluate.evaluated_task(settings(run_dir))[2] == {"test": 4}
    with pytest.raises(ValueError, match="n=100, but the test split of polaris holds 4 problems"):
        evaluate.run(settings(run_dir, "n=100"))


def test_a_raw_load_of_the_evaluate_config_still_reads(tmp_path):
    """experiments.mismatch reads conf/evaluate.yaml as a file (its `defaults` and `hydra`
    sections included) and overrides the run: those are Hydra's keys, no unknown settings."""
    from omegaconf import OmegaConf

    base = OmegaConf.to_container(OmegaConf.load(Path(CONF) / "evaluate.yaml"))
    e = evaluate_settings({**base, "run": str(saved_run(tmp_path)), "n": 4})
    assert (e.n, e.env, e.splits) == (4, None, ("test",))


@pytest.mark.e2e  # 20 s: an evaluation on the model of the shared run
def test_a_planning_run_evaluates_on_another_board(tmp_path, trained_run):
    """The shared small planning run (tests/test_train_smoke.py) on Sokoban, in the documented form:
    its harness settings and policies kept, the env recorded in the JSON."""
    from test_train_smoke import cfg_for

    run_dir, out = trained_run(cfg_for(tmp_path)), tmp_path / "sokoban.json"
    proc = cli(tmp_path, f"run={run_dir}", "env=sokoban", "env.max_moves=6", "n=2", "harnesses=[mas]", "threads=1",
               f"out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads(out.read_text())
    assert saved["env"]["name"] == "sokoban" and saved["env"]["max_moves"] == 6
    assert saved["mas"]["test"]["n"] == 2 and 0.0 <= saved["mas"]["test"]["success"] <= 1.0
    assert "env sokoban" in proc.stdout


@pytest.mark.e2e
@pytest.mark.parametrize("exp, env, make_data", [("math", "aime24", "maths"), ("code", "livecodebench", "lcb")])
def test_a_trained_run_evaluates_on_a_benchmarks_test_set(tmp_path, trained_run, exp, env, make_data):
    """`marl.evaluate run=<run> env=<benchmark> env.data_dir=<dir>` on a small trained maths or code
    run: the tiny tokenizer knows little of the benchmark's text (and a long statement runs past the
    tiny model's 256 positions), so success is about 0, but every problem is played and recorded."""
    from test_train_smoke import cfg_for

    if make_data == "maths":
        data = maths_files(tmp_path / env)
        long = {"id": 9, "problem": "Let $a_{n+1} = 3 a_n + 7$ with $a_0 = 12$. " * 100 + "Find $a_2$.", "answer": "136"}
        with (data / "test.jsonl").open("a") as f:
            f.write(json.dumps(long) + "\n")
        n = 3
    else:
        data = lcb_files(tmp_path / env)
        n = 2
    run_dir = trained_run(cfg_for(tmp_path, "train.steps=1", exp=exp))
    proc = cli(tmp_path, f"run={run_dir}", f"env={env}", f"env.data_dir={data}", "threads=1",
               f"out={tmp_path / 'out.json'}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["env"]["name"] == env and saved["env"]["data_dir"] == str(data)
    for h in ("single", "mas"):
        assert saved[h]["test"]["n"] == n and 0.0 <= saved[h]["test"]["success"] <= 1.0
