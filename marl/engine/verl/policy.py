"""One policy's verl stack, in its own Ray job: a GPU resource pool, the FSDP worker group of
`ActorRolloutRefWorker`s (train + rollout fused, verl's hybrid engine), the rollout replicas and
router (`LLMServerManager`) and the weight push (`CheckpointEngineManager`).

Why a Ray job per policy: verl 0.9.1 names each replica's server actor `vllm_server_<replica>_<node>`
(likewise for SGLang) and its workers look it up by that name, so two replica sets in one job
(namespace) collide; the weight-transfer sockets are keyed by job id too. Each policy is therefore
hosted by its own driver process (`python -m marl.engine.verl.policy`) in its own namespace, and
the policies take disjoint shares of the GPUs (`engine.placement=split`). With
`engine.rollout_backend=cpu` the same stack runs on CPU worker processes (`cpu_platform.py`).
"""
from __future__ import annotations

import argparse
import functools
import os
import signal
import stat
import sys
import threading
import time

import ray

HOST_NAME = "marl_policy_host"
# verl 0.9.1's update metrics (engine_workers.py, workers/utils/losses.py) under marl's names
RENAME = {"actor/pg_loss": "train/pg_loss", "actor/pg_clipfrac": "train/clipfrac", "actor/ppo_kl": "train/ppo_kl",
          "grad_norm": "train/grad_norm", "lr": "train/lr", "actor/entropy_loss": "train/entropy",
          "kl_loss": "train/kl"}


def _mean(v) -> float:
    if isinstance(v, (list, tuple)):
        return float(sum(v) / max(len(v), 1))
    return float(v)


@ray.remote(num_cpus=0)  # it waits on the workers, which hold the resources
class PolicyHost:
    def build(self, config, policy_id: str, reference: bool, lora: bool) -> int:
        """Start the stack; returns its data-parallel size (rows per update are padded to it).
        `config.trainer.device` is cuda, or cpu for CPU worker processes and token servers."""
        from verl.checkpoint_engine import CheckpointEngineManager
        from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
        from verl.utils.config import omega_conf_to_dataclass
        from verl.workers.engine_workers import ActorRolloutRefWorker
        from verl.workers.rollout.llm_server import LLMServerManager

        from marl.engine.verl.loss import ppo_loss

        t = config.trainer
        self.reference, self.lora = reference, lora
        device = t.device
        pool = RayResourcePool(process_on_nodes=[t.n_gpus_per_node] * t.nnodes, use_gpu=device == "cuda",
                               max_colocate_count=1, name_prefix=f"marl_{policy_id}")
        # with LoRA the reference is the base: the actor's forward with its adapter disabled
        role = "actor_rollout_ref" if reference and not lora else "actor_rollout"
        worker = RayClassWithInitArgs(cls=ray.remote(ActorRolloutRefWorker), config=config.actor_rollout_ref, role=role)
        self.wg = RayWorkerGroup(resource_pool=pool, ray_cls_with_init=worker, device_name=device)
        self.wg.init_model()
        # verl's loss, its clip fraction and KL reported as token means of the mini-batch (loss.py)
        self.wg.set_loss_fn(functools.partial(ppo_loss, config=omega_conf_to_dataclass(config.actor_rollout_ref.actor)))
        self.servers = LLMServerManager.create(config=config, worker_group=self.wg, rollout_resource_pool=pool)
        ce = omega_conf_to_dataclass(config.actor_rollout_ref.rollout.checkpoint_engine)
        # colocated replicas: each worker hands its weights to its replica in process (CUDA IPC into
        # vLLM, as verl's own v1 trainer; Ray's object store into a CPU server)
        ce.backend = "naive"
        self.ckpt = CheckpointEngineManager(config=ce, actor_wg=self.wg, replicas=self.servers.get_replicas())
        self.ckpt.sleep_replicas()
        self.ckpt.update_weights(0)  # the replicas start from the actor's weights (rollout.load_format=dummy)
        return self.wg.world_size

    def router(self):
        return self.servers.global_load_balancer

    def update(self, batch, mini_batch: int, epochs: int, seed: int, entropy: bool) -> dict[str, float]:
        """Old (and reference) log-probs by the FSDP actor, then PPO; the replicas sleep meanwhile."""
        self.ckpt.sleep_replicas()
        return train_rows(self.wg, batch, mini_batch, epochs, seed, entropy, self.reference, self.lora)

    def sync(self, version: int) -> None:
        self.ckpt.update_weights(version)

    def replica_weights(self) -> list[dict]:
        """Each replica server's weights (rollout_backend=cpu; for tests of the weight sync)."""
        return ray.get([r.servers[0].weights.remote() for r in self.servers.get_replicas()])

    def versions(self) -> list[int]:
        """The weight version each replica server generates with (rollout_backend=cpu)."""
        return ray.get([r.servers[0].weights_version.remote() for r in self.servers.get_replicas()])

    def save(self, path: str, step: int) -> None:
        self.wg.save_checkpoint(local_path=path, global_step=step)

    def load(self, path: str, version: int) -> None:
        self.ckpt.sleep_replicas()
        self.wg.load_checkpoint(local_path=path, del_local_after_load=False)
        self.ckpt.update_weights(version)


def response_log_probs(wg, batch, reference: bool = False, lora: bool = False):
    """(B, R) log-probs of the batch's responses at its rollout temperature, by the worker group:
    the actor's, or the reference's (with LoRA the base under the disabled adapter; otherwise
    verl's ref model)."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import no_padding_2_padding

    from marl.engine.verl.batch import worker_input
    meta = {"no_lora_adapter": True} if reference and lora else {}
    td = worker_input(batch, temperature=batch.meta_info["temperature"], calculate_entropy=False,
                      compute_loss=False, **meta)
    call = wg.compute_ref_log_prob if reference and not lora else wg.compute_log_prob
    return no_padding_2_padding(tu.get(call(td), "log_probs"), td).float()


def train_rows(wg, batch, mini_batch: int, epochs: int, seed: int, entropy: bool, reference: bool,
               lora: bool) -> dict[str, float]:
    """One PPO update of the worker group on `batch` (marl.engine.verl.batch.to_batch, its rows a
    multiple of `mini_batch`): old log-probs (and the reference's), then `update_actor`.
    Returns marl's metrics (verl's renamed, the rest under train/verl/)."""
    from verl.utils import tensordict_utils as tu

    from marl.engine.verl.batch import worker_input
    t0 = time.perf_counter()
    batch.batch["old_log_probs"] = response_log_probs(wg, batch)
    if reference:
        batch.batch["ref_log_prob"] = response_log_probs(wg, batch, reference=True, lora=lora)
    t1 = time.perf_counter()
    td = worker_input(batch, temperature=batch.meta_info["temperature"], calculate_entropy=entropy,
                      global_batch_size=mini_batch, mini_batch_size=mini_batch, epochs=epochs, seed=seed,
                      dataloader_kwargs={"shuffle": False}, compute_loss=True)
    raw = tu.get(wg.update_actor(td), "metrics")
    m = {RENAME.get(k, "train/verl/" + k.removeprefix("actor/")): _mean(v) for k, v in raw.items()}
    mask = batch.batch["response_mask"].bool()
    gap = (batch.batch["old_log_probs"] - batch.batch["rollout_log_probs"])[mask]
    m["train/rollout_logprob_gap"] = float(gap.abs().mean()) if gap.numel() else 0.0  # vLLM vs FSDP
    m["timing/old_logprob"] = t1 - t0  # the pre-update (and reference) log-prob passes, as engine=local
    return m


def main() -> None:
    """The driver process of one policy's Ray job: holds its `PolicyHost` until the trainer closes
    its stdin (`VerlEngine.close`), or until the trainer is gone (its GPUs are then freed with the
    job). A closed pipe, not a signal: Ray's signal handler prints a stack dump on SIGTERM."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--parent", type=int, required=True)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    env = {}
    if os.environ.get("VERL_PLATFORM") == "cpu":  # set by VerlEngine for rollout_backend=cpu
        from marl.engine.verl.cpu_platform import ray_env, use_here
        use_here()
        env = {"runtime_env": {"env_vars": ray_env()}}  # this job's workers and servers
    ray.init(address=a.address, namespace=a.namespace, log_to_driver=False, **env)
    host = PolicyHost.options(name=HOST_NAME).remote()  # kept: an actor without a handle is collected
    closed = threading.Event()
    if stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):  # VerlEngine's pipe (not a terminal or /dev/null)
        threading.Thread(target=lambda: (sys.stdin.read(), closed.set()), daemon=True).start()
    while os.getppid() == a.parent and not closed.wait(2):
        pass
    del host
    ray.shutdown()


if __name__ == "__main__":
    main()
