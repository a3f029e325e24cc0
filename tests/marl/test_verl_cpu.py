"""engine=verl run for real on the CPU (`engine.rollout_backend=cpu`): verl's own FSDP workers
(gloo, FSDP2) under marl's CPU platform, CPU token servers behind verl's LLMServerManager and
router, the weight sync verl's GPU path uses, and the trainer loop over it all.

- the same update on both engines: identical samples and starting weights give the same loss,
  clip fraction, KL estimate and grad norm, and the same updated weights (full and LoRA);
- after an update, `sync_weights` is what puts the new weights into the servers;
- `marl.train` end to end for every policy kind; a killed run resumes; `marl.evaluate` on its run.

The verl tier (`python -m pytest -m verl`): each engine start costs Ray and verl start-up
(15-30 s on 2 cores), so none of this is in the default suite; CI runs the tier.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from marl import train  # noqa: E402
from marl.engine import EngineSpec, LoraSpec, OptimSpec, UpdateSpec, make_engine  # noqa: E402
from marl.engine.verl.settings import VerlSettings  # noqa: E402
from test_local_engine import batch_for  # noqa: E402
from test_train_smoke import cfg_for, kill_in_step, rows  # noqa: E402

pytestmark = pytest.mark.verl
ROOT = Path(__file__).resolve().parents[2]
# two epochs over one mini-batch at a large learning rate: the second epoch's ratios move, so
# the clip fraction and KL estimate are not trivially 0
UPDATE = UpdateSpec(clip=0.2, ppo_epochs=2, mini_batch=64, micro_batch=64, grad_clip=1.0)
OPTIM = OptimSpec(lr=0.01, weight_decay=0.0, schedule="constant", warmup_steps=0, total_steps=10)
LORA = LoraSpec(rank=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj"))
COMPARED = ("train/pg_loss", "train/clipfrac", "train/ppo_kl", "train/grad_norm")
TOL = 1e-4  # fp32 on both engines; verl packs rows without padding, the local engine pads


def spec_for(model_dir, name, kind):
    ids = ("shared",) if kind == "shared" else ("tool", "plan")
    settings = VerlSettings(rollout_backend="cpu", prompt_length=2048, max_tokens_per_gpu=4096, rollout_workers=1)
    return EngineSpec(name=name, kind=kind, policy_ids=ids, model_path=model_dir, dtype="float32", device="cpu",
                      max_new_tokens=6, max_batch=0, optim=OPTIM, reference=False, seed=0,
                      lora=LORA if kind == "lora" else None, update=UPDATE,
                      settings=settings if name == "verl" else None)


@pytest.fixture(autouse=True)
def own_ray():
    """Each test starts the Ray its engines need (sized for them) and leaves none behind."""
    yield
    ray.shutdown()


@pytest.fixture
def engines(model_dir):
    """engines(kind) -> (local engine, verl engine) built from the same spec; the verl one is
    closed after the test."""
    made = []

    def get(kind):
        pair = make_engine(spec_for(model_dir, "local", kind)), make_engine(spec_for(model_dir, "verl", kind))
        made.append(pair[1])
        return pair
    yield get
    for e in made:
        e.close()


def replica_weights(engine, pid) -> dict:
    return ray.get(engine.hosts[pid].replica_weights.remote())[0]


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_one_update_is_the_same_on_both_engines_and_sync_puts_it_in_the_servers(engines, task):
    local, verl = engines("shared")
    batch = batch_for(local, task, "shared", n=8)
    start = {k: v.clone() for k, v in local.policies["shared"].module.state_dict().items()}
    assert max_diff(replica_weights(verl, "shared"), start) == 0.0  # both start from the model on disk
    m_local = local.update("shared", batch, UPDATE, random.Random(0))
    m_verl = verl.update("shared", batch, UPDATE, random.Random(0))
    assert m_local["train/clipfrac"] > 0 and m_local["train/ppo_kl"] != 0  # the comparison compares something
    for k in COMPARED:
        assert m_verl[k] == pytest.approx(m_local[k], rel=TOL, abs=1e-6), k
    assert max_diff(replica_weights(verl, "shared"), start) == 0.0  # trained, not yet pushed
    verl.sync_weights()
    trained = local.policies["shared"].module.state_dict()
    assert max_diff(trained, start) > 1e-3  # the update moved the weights
    assert max_diff(replica_weights(verl, "shared"), trained) < 1e-5  # the servers now hold verl's update


def test_lora_updates_the_same_adapter_on_both_engines_and_only_its_policy_is_pushed(engines, task):
    local, verl = engines("lora")
    batch = batch_for(local, task, "plan", n=8)
    m_local = local.update("plan", batch, UPDATE, random.Random(0))
    m_verl = verl.update("plan", batch, UPDATE, random.Random(0))
    for k in COMPARED:
        assert m_verl[k] == pytest.approx(m_local[k], rel=TOL, abs=1e-6), k
    before_tool = replica_weights(verl, "tool")
    verl.sync_weights()
    assert ray.get(verl.hosts["tool"].versions.remote()) == [0]  # not updated: not pushed again
    assert ray.get(verl.hosts["plan"].versions.remote()) == [1]
    served = replica_weights(verl, "plan")  # PEFT's names, adapter "default"
    ours = {k.replace(".plan.", ".default."): v for k, v in local.policies["plan"].module.state_dict().items()
            if ".plan." in k}
    assert max_diff({k: served[k] for k in ours}, ours) < 1e-5
    assert max_diff(replica_weights(verl, "tool"), before_tool) == 0.0
    init = verl._lora_dir  # marl's seeded adapters, read by verl's workers at start
    assert (init / "plan" / "adapter_config.json").exists()
    verl.close()
    assert not init.exists()  # removed with the engine


# --- marl.train and marl.evaluate over engine=verl ----------------------------------------------

CPU_VERL = ["engine=verl", "engine.rollout_backend=cpu", "engine.rollout_workers=2", "engine.prompt_length=2048",
            "engine.max_tokens_per_gpu=4096"]


@pytest.mark.parametrize("policy", ["shared", "per_role", "lora"])
def test_train_runs_end_to_end_with_the_local_engines_metric_names(tmp_path, policy, trained_run):
    run = trained_run(cfg_for(tmp_path, *CPU_VERL, f"policy={policy}"))
    local = trained_run(cfg_for(tmp_path, f"policy={policy}"))
    names = [set(r) - {"system/rss_mb"} for r in rows(run)]
    expected = [set(r) - {"system/rss_mb"} for r in rows(local)]
    marl_names = [{k for k in n if not k.startswith(("train/verl/", "role/")) or "/verl/" not in k} for n in names]
    for got, want in zip(marl_names, expected):
        assert want <= got | {k for k in want if "rollout_logprob_gap" in k}, want - got
    assert [r["step"] for r in rows(run)] == [r["step"] for r in rows(local)]
    assert not any("timing/logprob" in n for n in names)
    gaps = [v for r in rows(run)[1:] for k, v in r.items() if k.endswith("rollout_logprob_gap")]
    assert gaps and max(gaps) < 1e-4  # every step's rollouts came from the weights verl had trained
    ev = json.loads((run / "eval.json").read_text())
    assert {"warm_start", "final"} <= set(ev)
    assert all((run / "checkpoints" / "best" / f"verl_{pid}").is_dir()
               for pid in (["shared"] if policy == "shared" else ["tool", "plan"]))


def test_a_killed_run_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    args = [*CPU_VERL, "train.steps=3", "train.checkpoint_every=1", "train.eval_every=1"]
    run = tmp_path / "run"
    kill_in_step(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg_for(tmp_path, *args), run)
    monkeypatch.undo()
    assert (run / "checkpoints" / "latest").read_text() == "step_000001"
    val_at_1 = rows(run)[1]["eval/mas/val/success"]
    # the checkpoint holds what step 1 validated: marl.evaluate on it gives the same greedy success
    ev = tmp_path / "ev.json"
    out = subprocess.run([sys.executable, "-m", "marl.evaluate", f"run={run}", "checkpoint=step_000001",
                          "harnesses=[mas]", "splits=[val]", "n=4", f"out={ev}"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(ev.read_text())["mas"]["val"]["success"] == val_at_1
    train.run(cfg_for(tmp_path, *args, f"resume={run}"), run)
    steps = [r["step"] for r in rows(run)]
    assert steps == [0, 1, 2, 3, 3]  # step 2 trained once, from the checkpoint of step 1; then the final row
    assert rows(run)[2]["train/rollout_logprob_gap"] < 1e-4  # the servers generate with the loaded weights
    assert (run / "checkpoints" / "latest").read_text() == "step_000003"
    assert "final" in json.loads((run / "eval.json").read_text())


def test_a_failed_start_shows_the_workers_last_lines(tmp_path, model_dir):
    """Workers log to files only (log_to_driver=False keeps a run readable); when the stacks fail
    to start, the error carries the last lines of those logs, not just Ray's exception."""
    from dataclasses import replace

    broken = tmp_path / "no-weights"
    broken.mkdir()
    for f in Path(model_dir).iterdir():  # config and tokenizer, no weights: verl's init_model fails
        if not f.name.endswith(".safetensors"):
            (broken / f.name).write_bytes(f.read_bytes())
    with pytest.raises(RuntimeError, match="engine=verl failed to start") as err:
        make_engine(replace(spec_for(model_dir, "verl", "shared"), model_path=str(broken)))
    assert "last 15 lines" in str(err.value) and "worker-" in str(err.value)
    assert not ray.util.list_named_actors(all_namespaces=True) or all(
        a["name"] != "marl_policy_host" for a in ray.util.list_named_actors(all_namespaces=True))  # stacks ended
    ray.shutdown()
