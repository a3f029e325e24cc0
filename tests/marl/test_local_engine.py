"""The engine interface and `engine=local` as a whole, on a tiny random Qwen3 saved to disk:
the registry, policies of every kind, batched rollouts (one decoding call per (turn, role) step,
whatever order tool calls finish in), LoRA adapters, and save/load."""
from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import roles
from marl.engine import (Engine, EngineSpec, Learner, LoraSpec, OptimSpec, RolloutEngine, UpdateSpec, engine_class,
                         engine_names, make_engine, register_engine, training_engines)
from marl.episodes import play
from marl.engine.local.decode import decode
from marl.engine.local.logprobs import response_logprobs
from marl.grouping import check_groups
from marl.rollout import RolloutJob, RolloutSpec
from marl.routing import Routing
from marl.types import TrainSample
import fake_engine
from fake_engine import FakeEngine, good

OPTIM = OptimSpec(lr=1e-2, weight_decay=0.0, schedule="constant", warmup_steps=0, total_steps=10)
LORA = LoraSpec(rank=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj", "down_proj"))
ROLES = ("tool", "plan")


def engine_for(model_dir, kind="shared", reference=False, max_new_tokens=6, seed=0) -> Engine:
    ids = ("shared",) if kind == "shared" else ROLES
    return make_engine(EngineSpec(name="local", kind=kind, policy_ids=ids, model_path=model_dir, dtype="float32",
                                  device="cpu", max_new_tokens=max_new_tokens, max_batch=512, optim=OPTIM,
                                  reference=reference, seed=seed, lora=LORA if kind == "lora" else None))


# --- registry -------------------------------------------------------------------------------

def test_registry_refuses_unknown_and_duplicate_names():
    with pytest.raises(ValueError, match=r"unknown engine 'ray'; registered: local"):
        engine_class("ray")
    with pytest.raises(ValueError, match="'local' is already registered"):
        register_engine("local", Engine)
    assert engine_class("local").__name__ == "LocalEngine"


def test_spec_refuses_unknown_kinds_and_lora_without_settings(model_dir):
    with pytest.raises(ValueError, match="unknown policy 'team'; allowed: shared, per_role, lora"):
        replace(engine_for(model_dir).spec, kind="team")
    with pytest.raises(ValueError, match="policy=lora needs its LoRA settings"):
        replace(engine_for(model_dir).spec, kind="lora")


# --- the interface's two sides ------------------------------------------------------------------

def test_registered_engines_are_both_sides_and_a_generate_only_engine_is_the_rollout_side(task, model_dir):
    """The engines that train implement the rollout side and the learner side; a generate-only
    engine (engine=openai, the fake) only the rollout side, and evaluation episodes run over it."""
    for name in engine_names():
        cls = engine_class(name)
        assert RolloutEngine in cls.__mro__ and not cls.__abstractmethods__, name
        assert cls.trains == issubclass(cls, Engine) == (name in training_engines()), name
    assert training_engines() == ["local", "verl"] and not engine_class("openai").trains
    local = engine_for(model_dir)
    assert isinstance(local, RolloutEngine) and isinstance(local, Learner)
    fake = FakeEngine(script=lambda prompt, n: good(prompt))
    assert isinstance(fake, RolloutEngine) and not isinstance(fake, Learner)
    h = roles.make_harness(task, "mas")
    episodes = asyncio.run(play(h, "val", 3, fake, Routing({"tool": "p", "plan": "p"})))
    assert [e.problem_id for e in episodes] == ["val:0", "val:1", "val:2"] and all(e.solved for e in episodes)
    assert fake.stats() == {"calls": 6.0}  # the oracle solves each in one turn: tool, then plan
    fake.reset_stats()
    assert fake.stats() == {"calls": 0.0}
    with pytest.raises(ValueError, match="no policy 'q'"):
        fake.client("q")


def test_a_rollout_engine_missing_part_of_its_side_cannot_be_built():
    class NoStats(RolloutEngine):
        policy_ids = ("p",)

        def encode(self, policy_id, prompt):
            return [0]

        def client(self, policy_id):
            return None

        def max_prompt_tokens(self, policy_id):
            return None

        def reset_stats(self):
            pass

    with pytest.raises(TypeError, match="abstract method.*stats"):
        NoStats()


def test_the_prompt_rule_does_not_import_the_tiny_model_builder():
    code = "import sys, marl.engine.tokens; assert 'marl.tiny' not in sys.modules, 'marl.tiny was imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_fake_engine_module_cannot_be_shadowed():
    """pytest puts each test folder on sys.path, so two helper modules of one name shadow each other."""
    tests = Path(__file__).resolve().parents[1]
    names = [f.name for f in tests.rglob("*.py") if f.name not in ("conftest.py", "__init__.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
    assert Path(fake_engine.__file__).resolve() == tests / "fake_engine.py"


# --- rollouts through the engine --------------------------------------------------------------

def run_rollouts(engine, harness, n, k, routing, temperature=1.0):
    spec = RolloutSpec(k, temperature, 1.0)

    async def go():
        return await engine.gather([RolloutJob(harness, harness.task.instance("train", i), f"train:{i}",
                                               routing, spec, random.Random(i)) for i in range(n)])
    return asyncio.run(go())


@pytest.mark.parametrize("kind", ["shared", "per_role", "lora"])
def test_each_turn_and_role_step_is_one_decoding_call(model_dir, task, kind):
    engine = engine_for(model_dir, kind)
    h = roles.make_harness(task, "mas", max_turns=1)
    routing = Routing.default(kind, list(ROLES), h.role_names)
    k, n = 3, 4
    episodes = run_rollouts(engine, h, n, k, routing)
    samples = [s for ep in episodes for s in ep.samples]
    check_groups(samples, k)
    stats = engine.stats()
    assert len(samples) == n * k * 2 and stats["sequences"] == n * k * 2
    assert stats["calls"] == 2  # tool step, plan step: each one call for all problems and candidates
    for s in samples:
        assert s.policy == routing[s.role]
        assert s.prompt_ids == engine.encode(s.policy, s.prompt)
        assert s.response == engine.tokenizer.decode(s.response_ids, skip_special_tokens=True)


class JitteryTool:
    """Wraps a role: its apply blocks for a random time (a tool whose program takes longer on some
    candidates), drawn from its own unseeded clock-like source, so finish order varies run to run."""

    blocking = True

    def __init__(self, role, order: list):
        self.role, self.name, self.order = role, role.name, order
        self.jitter = random.Random()  # deliberately not seeded: timing must not matter

    def __getattr__(self, attr):
        return getattr(self.role, attr)

    def apply(self, state, parsed):
        time.sleep(self.jitter.uniform(0, 0.01))
        self.order.append(threading.get_ident())
        return self.role.apply(state, parsed)


def test_tool_calls_finishing_in_any_order_give_the_same_samples(model_dir, task):
    """Blocking tool work runs in the pool and finishes in a random order; the batches (and so
    the sampled tokens) are the same for the same seed."""
    h = roles.make_harness(task, "mas", max_turns=2)
    threads: list = []
    h.roles[0] = JitteryTool(h.roles[0], threads)
    engine = engine_for(model_dir, "shared", max_new_tokens=8)
    routing = Routing.default("shared", list(ROLES), h.role_names)
    runs = []
    for _ in range(3):
        torch.manual_seed(11)
        engine.reset_stats()
        eps = run_rollouts(engine, h, 6, 4, routing)
        runs.append(([(s.group_id, s.candidate, s.response_ids, s.reward) for ep in eps for s in ep.samples],
                     engine.stats()["calls"]))
    assert len(set(threads)) > 1, "the tool work ran in several pool threads"
    assert runs[0] == runs[1] == runs[2]
    assert len({tuple(ids) for _, _, ids, _ in runs[0][0]}) > 6  # sampled: candidates differ


def test_lora_adapters_of_different_roles_share_one_decoding_call(model_dir, task):
    """Rows of several adapters in one call (PEFT's mixed batch) decode as each adapter alone."""
    engine = engine_for(model_dir, "lora")
    base = engine.policies["tool"].module
    with torch.no_grad():  # make the adapters differ from each other (B starts at zero)
        for n, p in base.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(n) + ("plan" in n)))
    h = roles.make_harness(task, "mas")
    prompts = [engine.encode("tool", h.prompt(h.reset(task.instance("val", i)), "plan")) for i in range(3)]
    tok = engine.tokenizer
    args = (0.0, 12, tok.eos_token_id, tok.pad_token_id)
    mixed = decode(base, prompts * 4, *args, adapters=["tool"] * 6 + ["plan"] * 6)  # K = 2 per (adapter, prompt)
    alone = {a: decode(base, prompts * 2, *args, adapters=[a] * 6) for a in ROLES}
    assert torch.equal(mixed[0][:6], alone["tool"][0]) and torch.equal(mixed[0][6:], alone["plan"][0])
    assert not torch.equal(alone["tool"][0], alone["plan"][0]), "the two adapters must differ for this to test anything"
    assert mixed[3]["prefilled_prompts"] == 6  # a prompt is shared only within one adapter


# --- update, reference, save and load -----------------------------------------------------------

def batch_for(engine, task, pid, n=8):
    h = roles.make_harness(task, "mas", max_turns=1)
    routing = Routing({r: pid for r in h.role_names})
    torch.manual_seed(0)
    eps = run_rollouts(engine, h, n // 2, 2, routing)
    samples = [s for ep in eps for s in ep.samples][:n]
    return [TrainSample(s, 1.0 if i % 2 else -1.0) for i, s in enumerate(samples)]


def test_lora_update_trains_only_its_adapter_and_the_reference_is_the_bare_base(model_dir, task):
    engine = engine_for(model_dir, "lora", reference=True)
    peft_model = engine.policies["plan"].module
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    batch = batch_for(engine, task, "plan")
    m = engine.update("plan", batch, UpdateSpec(kl_coef=0.1), random.Random(0))
    assert m["train/kl"] == pytest.approx(0.0, abs=1e-6)  # B = 0 at the start: adapter == base
    changed = {n for n, p in peft_model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".plan." in n and "lora_" in n for n in changed), sorted(changed)[:5]
    m2 = engine.update("plan", batch, UpdateSpec(kl_coef=0.1), random.Random(0))
    assert m2["train/kl"] > 0  # the adapter moved away from its reference, the base
    plain = AutoModelForCausalLM.from_pretrained(model_dir).eval()  # the saved base, loaded afresh
    args = ([x.sample.prompt_ids for x in batch], [x.sample.response_ids for x in batch],
            [x.sample.temperature for x in batch], engine.tokenizer.pad_token_id)
    with torch.no_grad(), engine.policies["plan"].reference() as ref:
        ref_lp = response_logprobs(ref, *args)[0]
    with torch.no_grad():
        base_lp = response_logprobs(plain, *args)[0]
        engine.policies["plan"].activate()
        own_lp = response_logprobs(peft_model, *args)[0]
    assert torch.allclose(ref_lp, base_lp, atol=1e-5) and not torch.allclose(own_lp, base_lp, atol=1e-3)
    with pytest.raises(ValueError, match="generated by another policy"):
        engine.update("tool", batch, UpdateSpec(), random.Random(0))


@pytest.mark.parametrize("kind", ["per_role", "lora"])
def test_save_then_load_resumes_the_update_exactly(model_dir, task, tmp_path, kind):
    """Two updates in a row equal one update, save, a fresh engine loading it, one update."""
    spec = UpdateSpec(mini_batch=4, micro_batch=4)
    a = engine_for(model_dir, kind)
    batch = batch_for(a, task, "plan")
    a.update("plan", batch, spec, random.Random(1))
    a.save(tmp_path)
    m_a = a.update("plan", batch, spec, random.Random(2))
    b = engine_for(model_dir, kind, seed=5)  # another seed: LoRA's A matrices start elsewhere
    b.load(tmp_path)
    m_b = b.update("plan", batch, spec, random.Random(2))
    assert {k: v for k, v in m_a.items() if not k.startswith("timing/")} == \
           {k: v for k, v in m_b.items() if not k.startswith("timing/")}
    for (n, p), (_, q) in zip(a.policies["plan"].module.named_parameters(), b.policies["plan"].module.named_parameters()):
        assert torch.equal(p, q), n
    saved = torch.load(tmp_path / "policy_plan.pt", weights_only=False)
    if kind == "lora":  # adapters and their optimizer state only: no base weight in the file
        assert saved["weights"] and all("lora_" in k for k in saved["weights"])
        n_opt = sum(len(s) > 0 for s in saved["optimizer"]["state"].values())
        assert n_opt == len(a.policies["plan"].parameters)
    else:
        assert set(saved["weights"]) == set(a.policies["plan"].module.state_dict())


def test_load_names_what_a_checkpoint_holds_when_kinds_differ(model_dir, tmp_path):
    engine_for(model_dir, "shared").save(tmp_path)
    with pytest.raises(ValueError, match=r"has no policy 'tool' \(it has \['shared'\]\)"):
        engine_for(model_dir, "per_role").load(tmp_path)
    with pytest.raises(ValueError, match=r"has no policy 'tool' \(it has \['shared'\]\)"):
        engine_for(model_dir, "lora").load(tmp_path)
