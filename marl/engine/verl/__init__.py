"""`engine=verl`: the same rollout and AT-GRPO at cluster scale on verl 0.9.1, Ray and vLLM/SGLang.

Every verl import of an engine lives in this package, so verl's API changes land here:
- `settings.py`: conf/engine/verl.yaml, typed and checked (no verl import);
- `config.py`: marl's settings -> verl's trainer config (`verl_config`, one function);
- `policy.py`: one policy's stack (resource pool, FSDP worker group, replicas, weight push), each
  in its own Ray job (the module says why);
- `client.py`: marl's generate client over verl's `LLMServerClient` (problem id = request id);
- `rollout_workers.py`: `marl.rollout` unchanged in CPU Ray actors;
- `batch.py`: samples -> verl's training batch (uid = group key, zero-mask padding rows);
- `lora_init.py`: each policy's initial LoRA adapter, seeded by marl, for verl to load;
- `cpu_platform.py`, `cpu_rollout.py`, `cpu_server.py`: `rollout_backend=cpu`, verl's own workers
  on the CPU (a platform through verl's plugin hooks) with CPU token servers in vLLM's place.

The trainer (`marl.train`) is unchanged: it computes advantages with `marl.advantage` before the
batch is split by policy and hands each policy's rows to `update`. verl's own trainers are not
used: they copy a session's last reward onto its earlier outputs and overwrite each row's uid
with the prompt's, which is not AT-GRPO.
"""
from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from marl.engine import Engine, EngineSpec, UpdateSpec
from marl.engine.tokens import encode_prompt, load_tokenizer
from marl.engine.verl.lora_init import write_initial_adapters
from marl.engine.verl.settings import VerlSettings
from marl.types import TrainSample

HOST_START_S = 600  # a policy's stack: Ray job start, model load, vLLM start-up and CUDA graph capture


def gpus_visible(settings: VerlSettings) -> tuple[int, str]:
    """(GPUs, where): on this machine for a local Ray, else in the cluster at `ray_address`."""
    if settings.ray_address is None:
        import torch
        return (torch.cuda.device_count() if torch.cuda.is_available() else 0), "this machine"
    import ray
    ray.init(address=settings.ray_address, ignore_reinit_error=True, log_to_driver=False)
    return int(ray.cluster_resources().get("GPU", 0)), f"the Ray cluster at {settings.ray_address}"


class VerlEngine(Engine):
    @classmethod
    def read_settings(cls, section: dict) -> VerlSettings:
        return VerlSettings.from_section(section)

    @classmethod
    def check_environment(cls, settings: VerlSettings, n_policies: int) -> None:
        if settings.on_cpu:
            settings.gpus_per_policy(n_policies)  # worker processes: any machine has them
            return
        have, where = gpus_visible(settings)
        if have == 0:
            raise ValueError(f"engine=verl needs NVIDIA GPUs (verl's FSDP workers and vLLM/SGLang servers have no "
                             f"CPU path), and {where} has none. Train on the CPU with engine=local (the default) or "
                             "engine.rollout_backend=cpu (verl's workers on the CPU), or see README, 'On a GPU cluster'")
        if have < settings.gpus(n_policies):
            raise ValueError(f"engine.nnodes={settings.nnodes} x engine.n_gpus_per_node={settings.per_node(n_policies)} "
                             f"asks for {settings.gpus(n_policies)} GPUs; {where} has {have}")
        settings.gpus_per_policy(n_policies)  # refuses a split that does not divide

    def __init__(self, spec: EngineSpec):
        import ray

        from marl.engine.verl.config import verl_config
        from marl.engine.verl.policy import HOST_NAME
        from marl.engine.verl.rollout_workers import Endpoint, RolloutWorker

        self.spec, s = spec, spec.settings
        nodes, per_node = s.gpus_per_policy(len(spec.policy_ids))
        if s.on_cpu:
            from marl.engine.verl.cpu_platform import use_here
            use_here()
        if not ray.is_initialized():
            ray.init(address=s.ray_address, log_to_driver=False, **local_ray(s, nodes * per_node, len(spec.policy_ids)))
        if s.on_cpu:  # a pool Ray cannot place waits forever: refuse a Ray without room instead
            need = nodes * per_node * len(spec.policy_ids) + s.rollout_workers
            free = ray.available_resources().get("CPU", 0)
            if free < need:
                raise RuntimeError(f"engine=verl needs {need} free CPUs in Ray (one per FSDP worker and rollout worker) "
                                   f"and the Ray this process joined has {free:g}: start it with more num_cpus, or "
                                   "end what holds them")
        env = dict(os.environ)  # after ray.init: a local Ray's auth token is in it, for the policies' drivers
        self.tokenizer, self.chat = load_tokenizer(spec.model_path)
        self.procs, self.hosts = {}, {}
        lora_init = write_initial_adapters(spec) if spec.lora is not None else {}
        # read by verl's workers when they start (init_model), removed by close()
        self._lora_dir = Path(next(iter(lora_init.values()))).parent if lora_init else None
        run = uuid.uuid4().hex[:8]
        gcs = ray.get_runtime_context().gcs_address
        try:
            for pid in spec.policy_ids:
                ns = f"marl_{run}_{pid}"
                self.procs[pid] = subprocess.Popen([sys.executable, "-m", "marl.engine.verl.policy", "--address", gcs,
                                                    "--namespace", ns, "--parent", str(os.getpid())],
                                                   env=env, stdin=subprocess.PIPE)
                self.hosts[pid] = self._wait_for(HOST_NAME, ns, self.procs[pid])
            dps = ray.get([h.build.remote(verl_config(spec, s, nodes, per_node, lora_init.get(pid)), pid,
                                          spec.reference, spec.lora is not None) for pid, h in self.hosts.items()],
                          timeout=HOST_START_S)  # e.g. a resource pool Ray cannot place waits forever
        except Exception as e:
            self.close()
            raise RuntimeError(f"engine=verl failed to start: {e}\n{worker_log_tail()}") from e
        self.dp = dict(zip(self.hosts, dps))
        self.updated: set[str] = set()  # policies trained since the last sync_weights
        routers = dict(zip(self.hosts, ray.get([h.router.remote() for h in self.hosts.values()])))
        self.endpoints = {pid: Endpoint(spec.model_path, routers[pid], s.rollout_backend, spec.max_new_tokens,
                                   s.prompt_length)
                          for pid in spec.policy_ids}
        self.workers = [RolloutWorker.remote(self.endpoints) for _ in range(s.rollout_workers)]
        self._clients: dict = {}
        self._stats: dict[str, float] = {}
        self.version = 0  # weight version pushed to the replicas

    @staticmethod
    def _wait_for(name: str, namespace: str, proc):
        import ray
        t0 = time.time()
        while time.time() - t0 < HOST_START_S:
            if proc.poll() is not None:
                raise RuntimeError(f"the driver of Ray namespace {namespace} exited with code {proc.returncode}")
            try:
                return ray.get_actor(name, namespace=namespace)
            except ValueError:
                time.sleep(1.0)
        raise TimeoutError(f"no {name} in Ray namespace {namespace} after {HOST_START_S} s")

    def client(self, policy_id: str):
        """A generate client in this process (the trainer's rollouts run in the workers)."""
        self.check_policy(policy_id)
        if policy_id not in self._clients:
            from marl.engine.verl.rollout_workers import RolloutSide
            from marl.engine.stats import GenerateStats
            self._clients[policy_id] = RolloutSide({policy_id: self.endpoints[policy_id]}, GenerateStats()).client(policy_id)
        return self._clients[policy_id]

    def encode(self, policy_id: str, prompt: str) -> list[int]:
        return encode_prompt(self.tokenizer, self.chat, prompt)

    def max_prompt_tokens(self, policy_id: str) -> int:
        """engine.prompt_length: the replicas' max_model_len is it plus model.max_new_tokens (config.py)."""
        self.check_policy(policy_id)
        return self.spec.settings.prompt_length

    async def gather(self, jobs: list, on_done=None) -> list:
        """The rollout workers return a step's episodes together: `on_done` hears of each then."""
        from marl.engine.verl.rollout_workers import run_on_workers
        episodes, st = await run_on_workers(self.workers, jobs)
        for k, v in st.items():
            self._stats[k] = self._stats.get(k, 0.0) + v
        for i, ep in enumerate(episodes):
            if on_done is not None:
                on_done(i, ep)
        return episodes

    def update(self, policy_id: str, batch: list[TrainSample], spec: UpdateSpec, rng: random.Random) -> dict:
        import ray

        from marl.engine.verl.batch import to_batch
        self.check_policy(policy_id)
        if spec != self.spec.update:
            raise ValueError("engine=verl configured its workers with the run's UpdateSpec; update() got another")
        if any(x.sample.policy != policy_id for x in batch):
            raise ValueError(f"update({policy_id!r}) got samples generated by another policy")
        dp = self.dp[policy_id]
        # verl splits rows evenly over data-parallel ranks and mini-batches: pad to a multiple of
        # the mini-batch (one when every row fits in it), itself a multiple of dp
        mini = math.ceil(min(spec.mini_batch, len(batch)) / dp) * dp
        data = to_batch(batch, mini, self.tokenizer.pad_token_id)
        out = ray.get(self.hosts[policy_id].update.remote(data, mini, spec.ppo_epochs, rng.randrange(2**31),
                                                          spec.entropy_coef > 0))
        self.updated.add(policy_id)
        return out

    def sync_weights(self) -> None:
        """Push the weights of the policies trained since the last push (the others' replicas
        already hold theirs: a push into an awake replica costs its memory twice over)."""
        import ray
        self.version += 1
        ray.get([self.hosts[pid].sync.remote(self.version) for pid in sorted(self.updated)])
        self.updated.clear()

    def save(self, directory: Path) -> None:
        """verl's checkpoint of each policy under `directory/verl_<policy>` (a filesystem every
        node sees: the FSDP ranks write their own shards)."""
        import ray
        ray.get([h.save.remote(str(Path(directory).resolve() / f"verl_{pid}"), self.version)
                 for pid, h in self.hosts.items()])

    def load(self, directory: Path, weights_only: bool = False) -> None:
        """Weights, optimizer and schedule (verl's checkpoint holds them together; loading the
        optimizer for a final evaluation changes nothing it measures)."""
        import ray
        for pid in self.hosts:
            if not (Path(directory) / f"verl_{pid}").exists():
                raise ValueError(f"checkpoint {directory} has no verl_{pid}: saved by another engine or policy kind?")
        ray.get([h.load.remote(str(Path(directory).resolve() / f"verl_{pid}"), self.version)
                 for pid, h in self.hosts.items()])

    def stats(self) -> dict[str, float]:
        return dict(self._stats)

    def reset_stats(self) -> None:
        self._stats = {}

    def close(self) -> None:
        """End every policy's Ray job (its driver exits when its stdin closes), then the workers."""
        for p in self.procs.values():
            p.stdin.close()
        for p in self.procs.values():
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = {}
        if self._lora_dir is not None:
            shutil.rmtree(self._lora_dir, ignore_errors=True)
            self._lora_dir = None


def local_ray(settings: VerlSettings, devices_per_policy: int, n_policies: int) -> dict:
    """`ray.init` options for a Ray started here. With rollout_backend=cpu: the CPU platform's
    environment in every process, and enough logical CPUs for every actor (each FSDP rank and
    rollout worker asks for one; on a 2-core machine they share the cores, one thread each)."""
    if settings.ray_address is not None or not settings.on_cpu:
        return {}
    from marl.engine.verl.cpu_platform import ray_env
    # logical CPUs: what the actors ask for, with room for a second engine in the same process
    need = 2 * (devices_per_policy * n_policies + settings.rollout_workers)
    return {"num_cpus": max(os.cpu_count() or 1, need), "runtime_env": {"env_vars": ray_env()},
            "include_dashboard": False}


def worker_log_tail(files: int = 4, lines: int = 15) -> str:
    """The last lines of this Ray session's most recent worker logs (workers log to files only:
    `log_to_driver=False` keeps a run's output readable), for the error of a failed start."""
    try:
        import ray
        logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    except Exception:  # noqa: BLE001 - no session to read: say so rather than hide the first error
        return "(no Ray session logs to show)"
    recent = sorted((p for p in logs.glob("worker-*") if p.stat().st_size), key=lambda p: p.stat().st_mtime)[-files:]
    parts = [f"--- {p} (last {lines} lines)\n" + "\n".join(p.read_text(errors="replace").splitlines()[-lines:])
             for p in recent]
    return "\n".join(parts) if parts else f"(no worker output in {logs})"
