"""engine=verl's rollout path on CPU with real Ray and verl's real `LLMServerClient` and router:
CPU token servers (`marl.engine.verl.cpu_server`, the local engine's decoding behind vLLM's
`generate`) stand in for the GPU replicas. The client's sampling parameters, token ids and
log-probs kept verbatim, sticky request ids, greedy decoding, the same rollout as the local
engine, and rollouts spread over several CPU Ray actors with per-policy routing."""
from __future__ import annotations

import asyncio
import random

import pytest

pytest.importorskip("ray")
import ray  # noqa: E402

import envs  # noqa: E402
import roles  # noqa: E402
from marl.engine import EngineSpec, OptimSpec, UpdateSpec, make_engine  # noqa: E402
from marl.engine.verl.client import VerlClient, sampling_params  # noqa: E402
from marl.engine.verl.cpu_server import CpuTokenServer  # noqa: E402
from marl.engine.verl.rollout_workers import Endpoint, RolloutWorker, run_on_workers  # noqa: E402
from marl.grouping import check_groups  # noqa: E402
from marl.rollout import RolloutJob, RolloutSpec  # noqa: E402
from marl.routing import Routing  # noqa: E402

MAX_NEW = 6
PROMPT = 4096  # engine.prompt_length's default


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=6, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def router(servers: dict):
    from verl.workers.rollout.router import get_router_handle
    return get_router_handle(servers=servers)


@pytest.fixture(scope="module")
def servers(cluster, model_dir):
    """Two token servers behind one router (policy "shared" / "tool"), one behind another ("plan")."""
    a = {f"cpu:{i}": CpuTokenServer.remote(model_dir, f"cpu:{i}") for i in range(2)}
    b = {"cpu:plan": CpuTokenServer.remote(model_dir, "cpu:plan")}
    ray.get([s.calls.remote() for s in [*a.values(), *b.values()]])  # started
    return {"two": (a, router(a)), "one": (b, router(b))}


@pytest.fixture(scope="module")
def workers(servers, model_dir):
    """Two rollout workers; policy "shared" and "tool" behind the two-server router, "plan" behind the other."""
    (_, two), (_, one) = servers["two"], servers["one"]
    eps = {pid: Endpoint(model_dir, two if pid != "plan" else one, "vllm", MAX_NEW, PROMPT)
           for pid in ("shared", "tool", "plan")}
    return [RolloutWorker.remote(eps) for _ in range(2)]


def local_engine(model_dir):
    optim = OptimSpec(lr=0.0, weight_decay=0.0, schedule="constant", warmup_steps=0, total_steps=1)
    return make_engine(EngineSpec(name="local", kind="shared", policy_ids=("shared",), model_path=model_dir,
                                  dtype="float32", device="cpu", max_new_tokens=MAX_NEW, max_batch=64,
                                  optim=optim, reference=False, seed=0))


def verl_client(router_handle, model_dir):
    from omegaconf import OmegaConf
    from verl.workers.rollout.llm_server import LLMServerClient

    from marl.engine.tokens import load_tokenizer
    cfg = OmegaConf.create({"actor_rollout_ref": {"rollout": {"name": "vllm", "full_determinism": False}}})
    return VerlClient(LLMServerClient(cfg, load_balancer_handle=router_handle), load_tokenizer(model_dir)[0], MAX_NEW)


def test_sampling_params_are_plain_softmax_at_the_temperature():
    assert sampling_params(0.7, 24) == {"temperature": 0.7, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0,
                                        "max_tokens": 24, "logprobs": True}
    assert sampling_params(0, 5)["temperature"] == 0.0
    with pytest.raises(ValueError):
        sampling_params(-1, 5)


def test_client_refuses_empty_aborted_or_logprob_less_output():
    """A server answer marl cannot train on is an error naming what was wrong, not a sample."""
    from verl.workers.rollout.replica import TokenOutput

    class Stub:
        def __init__(self, out):
            self.out = out

        async def generate(self, request_id, *, prompt_ids, sampling_params):
            return self.out
    for out, msg in [(TokenOutput(token_ids=[], log_probs=[]), "returned no tokens"),
                     (TokenOutput(token_ids=[3], log_probs=[-0.1], stop_reason="aborted"), "aborted"),
                     (TokenOutput(token_ids=[3, 4], log_probs=None), "2 tokens and no log-probs"),
                     (TokenOutput(token_ids=[3, 4], log_probs=[-0.1]), "2 tokens and 1 log-probs")]:
        with pytest.raises(RuntimeError, match=msg):
            asyncio.run(VerlClient(Stub(out), None, 4).generate([1, 2], 1.0, request_id="train:0"))


@pytest.mark.e2e
def test_client_keeps_server_output_verbatim_and_sticks_to_one_replica(servers, model_dir):
    """K concurrent calls of one problem through verl's client and router: all reach one
    replica (sticky on the request id), with marl's sampling parameters, and each completion is
    the server's token ids and log-probs unchanged; another problem's calls are routed afresh."""
    two, lb = servers["two"]
    client = verl_client(lb, model_dir)
    engine = local_engine(model_dir)
    h = roles.make_harness(envs.make("planpath"), "mas")
    prompt = engine.encode("shared", h.prompt(h.reset(h.task.instance("train", 0)), "tool"))
    before = {n: len(ray.get(s.calls.remote())) for n, s in two.items()}

    async def k_calls(rid, k=4):
        return await asyncio.gather(*[client.generate(prompt, 1.0, request_id=rid) for _ in range(k)])
    comps = asyncio.run(k_calls("train:7"))
    new = {n: ray.get(s.calls.remote())[before[n]:] for n, s in two.items()}
    hit = [n for n, calls in new.items() if calls]
    assert len(hit) == 1 and len(new[hit[0]]) == 4, {n: len(c) for n, c in new.items()}
    logged = new[hit[0]]
    assert all(c["sampling_params"] == sampling_params(1.0, MAX_NEW) for c in logged)
    assert all(c["prompt_ids"] == prompt for c in logged)
    assert sorted((c.token_ids, c.logprobs) for c in comps) == sorted((c["token_ids"], c["log_probs"]) for c in logged)
    assert client.stats.counts["calls"] == 4 and client.stats.counts["new_tokens"] == sum(len(c.token_ids) for c in comps)
    # the same request id later still goes to that replica
    asyncio.run(k_calls("train:7", k=2))
    assert len(ray.get(two[hit[0]].calls.remote())) == before[hit[0]] + 6


@pytest.mark.e2e
def test_greedy_through_verl_client_equals_local_engine(servers, model_dir):
    _, lb = servers["two"]
    client = verl_client(lb, model_dir)
    engine = local_engine(model_dir)
    h = roles.make_harness(envs.make("planpath"), "mas")
    prompts = [engine.encode("shared", h.prompt(h.reset(h.task.instance("val", i)), "tool")) for i in range(3)]

    async def both():
        ours = await asyncio.gather(*[client.generate(p, 0.0, request_id=f"val:{i}") for i, p in enumerate(prompts)])
        local = [await engine.client("shared").generate(p, 0.0) for p in prompts]
        return ours, local
    ours, local = asyncio.run(both())
    for a, b in zip(ours, local):
        assert a.token_ids == b.token_ids and a.text == b.text
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)


def run_local(engine, jobs):
    async def go():
        return await engine.gather(jobs)
    return asyncio.run(go())


def jobs_for(h, routing, n, k, temperature, split="train"):
    return [RolloutJob(h, h.task.instance(split, i), f"{split}:{i}", routing, RolloutSpec(k, temperature, 1.0),
                       random.Random(i)) for i in range(n)]


@pytest.mark.e2e
def test_same_greedy_rollout_through_ray_workers_and_local_engine(workers, model_dir):
    """marl.rollout in Ray actors over verl's client gives the local engine's episodes."""
    h = roles.make_harness(envs.make("planpath"), "mas")
    routing = Routing.default("shared", h.role_names, h.role_names)
    jobs = jobs_for(h, routing, n=5, k=2, temperature=0.0)
    remote, stats = asyncio.run(run_on_workers(workers, jobs))
    local = run_local(local_engine(model_dir), jobs)
    assert [e.problem_id for e in remote] == [j.problem_id for j in jobs]
    assert stats["calls"] == sum(len(e.samples) for e in remote)
    for a, b in zip(remote, local):
        assert (a.problem_id, a.solved, a.turns, a.return_) == (b.problem_id, b.solved, b.turns, b.return_)
        assert len(a.samples) == len(b.samples) > 0
        for x, y in zip(a.samples, b.samples):
            for f in ("turn", "role", "policy", "candidate", "prompt", "response", "prompt_ids", "response_ids",
                      "reward", "local", "team", "parse_ok", "chosen", "group_id"):
                assert getattr(x, f) == getattr(y, f), f
            assert x.logprobs == pytest.approx(y.logprobs, abs=1e-5)


@pytest.mark.e2e
def test_rollouts_over_several_workers_route_each_role_to_its_policy(servers, workers):
    """per_role over two workers: every problem rolled out once and in order, groups intact
    (K members, one prompt), each role's requests only on its own policy's replicas."""
    (tool_servers, _), (plan_servers, _) = servers["two"], servers["one"]
    h = roles.make_harness(envs.make("planpath"), "mas")
    routing = Routing.default("per_role", h.role_names, h.role_names)
    assert routing["tool"] == "tool" and routing["plan"] == "plan"
    k = 3
    jobs = jobs_for(h, routing, n=7, k=k, temperature=1.0)
    calls_before = {n: len(ray.get(s.calls.remote())) for n, s in {**tool_servers, **plan_servers}.items()}
    episodes, stats = asyncio.run(run_on_workers(workers, jobs))
    assert [e.problem_id for e in episodes] == [f"train:{i}" for i in range(7)]
    samples = [s for e in episodes for s in e.samples]
    check_groups(samples, k, "at_grpo")
    assert all(s.policy == routing[s.role] for s in samples)
    served = {n: ray.get(s.calls.remote())[calls_before[n]:] for n, s in {**tool_servers, **plan_servers}.items()}
    by_policy = {"tool": [c for n in tool_servers for c in served[n]], "plan": served["cpu:plan"]}
    for pid in ("tool", "plan"):
        mine = [s for s in samples if s.policy == pid]
        assert len(by_policy[pid]) == len(mine) > 0
        assert sorted(map(tuple, (c["prompt_ids"] for c in by_policy[pid]))) == sorted(tuple(s.prompt_ids) for s in mine)
    assert stats["calls"] == len(samples)


def host_proc(namespace: str, parent: int | None = None):
    import os
    import subprocess
    import sys
    gcs = ray.get_runtime_context().gcs_address
    return subprocess.Popen([sys.executable, "-m", "marl.engine.verl.policy", "--address", gcs,
                             "--namespace", namespace, "--parent", str(parent or os.getpid())])


@pytest.mark.e2e
def test_each_policy_stack_is_its_own_ray_job_and_dies_with_the_trainer(cluster, tmp_path):
    """verl 0.9.1's replica server actors have fixed names, so each policy's stack lives in its
    own Ray job and namespace (marl.engine.verl.policy): two hosts under one actor name coexist,
    in different jobs. A host whose trainer process is gone exits (freeing its GPUs)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from marl.engine.verl import VerlEngine
    from marl.engine.verl.policy import HOST_NAME
    procs = [host_proc(f"marl_test_{i}") for i in range(2)]
    try:
        hosts = [VerlEngine._wait_for(HOST_NAME, f"marl_test_{i}", p) for i, p in enumerate(procs)]
        where = [ray.get(h.__ray_call__.remote(lambda self: (ray.get_runtime_context().get_job_id(),
                                                              ray.get_runtime_context().namespace))) for h in hosts]
        assert where[0][0] != where[1][0] and [w[1] for w in where] == ["marl_test_0", "marl_test_1"]
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=60)
    # a host whose trainer is killed (SIGKILL: no close()) ends its job, and with it the stack
    gcs = ray.get_runtime_context().gcs_address
    trainer = subprocess.Popen([sys.executable, "-c", (
        "import os, subprocess, sys, time; subprocess.Popen([sys.executable, '-m', 'marl.engine.verl.policy', "
        f"'--address', '{gcs}', '--namespace', 'marl_test_orphan', '--parent', str(os.getpid())]); time.sleep(600)")])
    VerlEngine._wait_for(HOST_NAME, "marl_test_orphan", trainer)
    os.kill(trainer.pid, signal.SIGKILL)
    trainer.wait()
    t0 = time.time()
    while time.time() - t0 < 60:
        try:
            ray.get_actor(HOST_NAME, namespace="marl_test_orphan")
        except ValueError:
            return
        time.sleep(0.5)
    raise AssertionError("the policy host outlived the trainer that started it")


class _Remote:
    """`actor.method.remote(...)` of a stand-in host: runs in this process, result via the object store."""

    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args, **kwargs):
        return ray.put(self.fn(*args, **kwargs))


class FakeHost:
    """A policy host without GPUs: records what the engine sends it."""

    def __init__(self):
        self.calls = []
        for name in ("update", "sync", "save", "load"):
            setattr(self, name, _Remote(lambda *a, _n=name, **k: self.calls.append((_n, a, k)) or {"train/pg_loss": 0.0}))


def driver(model_dir, workers, policy_ids=("tool", "plan"), dp=4, mini_batch=6):
    """VerlEngine's driver side over stand-in hosts and the test's rollout workers and servers."""
    from marl.engine.tokens import load_tokenizer
    from marl.engine.verl import VerlEngine
    from marl.engine.verl.settings import VerlSettings
    e = VerlEngine.__new__(VerlEngine)
    optim = OptimSpec(lr=0.0, weight_decay=0.0, schedule="constant", warmup_steps=0, total_steps=1)
    e.spec = EngineSpec(name="verl", kind="per_role", policy_ids=policy_ids, model_path=model_dir, dtype="bfloat16",
                        device="cuda", max_new_tokens=MAX_NEW, max_batch=0, optim=optim, reference=False, seed=0,
                        update=UpdateSpec(mini_batch=mini_batch), settings=VerlSettings())
    e.tokenizer, e.chat = load_tokenizer(model_dir)
    e.hosts, e.procs = {p: FakeHost() for p in policy_ids}, {}
    e.dp, e.workers, e._stats, e.version = {p: dp for p in policy_ids}, workers, {}, 0
    e.updated, e._lora_dir = set(), None
    return e


@pytest.mark.e2e
def test_driver_pads_to_whole_mini_batches_of_dp_rows_and_checks_its_inputs(workers, model_dir):
    from marl.engine import UpdateSpec as U
    from marl.types import TrainSample
    e = driver(model_dir, workers, dp=4, mini_batch=6)
    h = roles.make_harness(envs.make("planpath"), "mas")
    jobs = jobs_for(h, Routing.default("per_role", h.role_names, h.role_names), n=3, k=3, temperature=1.0)
    episodes = asyncio.run(e.gather(jobs))
    samples = [s for ep in episodes for s in ep.samples]
    assert e.stats()["calls"] == len(samples)
    tool = [TrainSample(s, 0.5) for s in samples if s.policy == "tool"]
    e.update("tool", tool, e.spec.update, random.Random(0))
    (name, (data, mini, epochs, seed, entropy), _), = e.hosts["tool"].calls
    assert mini == 8  # min(6, rows) rounded up to a multiple of dp=4
    assert len(data) % mini == 0 and len(data) - len(tool) < mini
    assert list(data.non_tensor_batch["is_pad"]).count(False) == len(tool)
    with pytest.raises(ValueError, match="another policy"):
        e.update("tool", [TrainSample(s, 0.0) for s in samples if s.policy == "plan"], e.spec.update, random.Random(0))
    with pytest.raises(ValueError, match="UpdateSpec"):
        e.update("tool", tool, U(mini_batch=7), random.Random(0))
    with pytest.raises(ValueError, match="no policy 'shared'"):
        e.update("shared", tool, e.spec.update, random.Random(0))
    e.sync_weights()
    e.sync_weights()
    # only what was updated is pushed: tool's weights once (version 1), plan's never
    assert [c[1] for c in e.hosts["tool"].calls if c[0] == "sync"] == [(1,)]
    assert not [c for c in e.hosts["plan"].calls if c[0] == "sync"]


@pytest.mark.e2e
def test_driver_checkpoints_one_directory_per_policy(workers, model_dir, tmp_path):
    e = driver(model_dir, workers)
    e.save(tmp_path)
    assert [c[1][0] for h in e.hosts.values() for c in h.calls] == [str(tmp_path.resolve() / "verl_tool"),
                                                                   str(tmp_path.resolve() / "verl_plan")]
    with pytest.raises(ValueError, match="has no verl_tool"):
        e.load(tmp_path)  # the fake hosts wrote nothing there
    (tmp_path / "verl_tool").mkdir()
    (tmp_path / "verl_plan").mkdir()
    e.load(tmp_path)
    assert [c[0] for c in e.hosts["plan"].calls] == ["save", "load"]


@pytest.mark.e2e
def test_a_prompt_over_engine_prompt_length_never_reaches_a_replica(servers, model_dir):
    """The workers' budget is each policy's `engine.prompt_length` (the Endpoint's): with the
    planner's set below every planner prompt, its replica gets no request and each episode ends
    on the planner's first prompt, failed, with the tool's groups whole."""
    (tool_servers, two), (plan_servers, one) = servers["two"], servers["one"]
    eps = {"tool": Endpoint(model_dir, two, "vllm", MAX_NEW, PROMPT),
           "plan": Endpoint(model_dir, one, "vllm", MAX_NEW, 8)}
    h = roles.make_harness(envs.make("planpath"), "mas")
    routing = Routing.default("per_role", h.role_names, h.role_names)
    k = 2
    jobs = jobs_for(h, routing, n=3, k=k, temperature=1.0)
    plan_calls = len(ray.get(plan_servers["cpu:plan"].calls.remote()))
    episodes, stats = asyncio.run(run_on_workers([RolloutWorker.remote(eps)], jobs))
    assert len(ray.get(plan_servers["cpu:plan"].calls.remote())) == plan_calls
    assert all(e.overflow.role == "plan" and e.overflow.budget == 8 and not e.solved for e in episodes)
    samples = [s for e in episodes for s in e.samples]
    check_groups(samples, k, "at_grpo")
    assert {s.role for s in samples} == {"tool"} and stats["calls"] == len(samples) == 3 * k
