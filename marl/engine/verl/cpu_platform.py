"""verl on a CPU (`engine.rollout_backend=cpu`): a CPU platform, rollout adapter and replica
registered through verl 0.9.1's own hooks, in every process that imports verl.

verl ships no CPU platform: with no accelerator it falls back to NVIDIA, and its FSDP engines
are registered for cuda and npu only. What this module registers, and why each piece:

- `PlatformCPU` (`verl.plugin.platform.PlatformRegistry`, chosen by `VERL_PLATFORM=cpu`): device
  "cpu", backend gloo, and a device module whose memory queries answer in the types verl expects
  (`mem_get_info()` a tuple, `get_device_name()` a string);
- the process-group backend: verl builds `cpu:gloo,<device>:<backend>`, which for a CPU is
  `cpu:gloo,cpu:gloo`, a duplicate device type torch refuses; on this platform it is `gloo`;
- `VERL_ENGINE_DEVICE=cuda` selects verl's FSDP engine (its registry has cuda and npu keys only);
  FSDP2 runs on CPU parameters (FSDP1 hard-codes `sync_module_states=True`, which refuses them);
- rollout `cpu`: a `RolloutReplica` whose server is a `CpuTokenServer` (the local engine's decoding
  in a Ray actor) and a `BaseRollout` adapter inside each FSDP worker that receives the weights of
  verl's in-process ("naive") weight sync, as vLLM's adapter does, and forwards them to its
  replica's server. The server therefore generates with exactly the weights the actor trained.

`ENV` holds the environment every Ray process of a CPU run needs (`runtime_env`); `activate()`
registers everything in the current process. Nothing here runs unless rollout_backend=cpu.
"""
from __future__ import annotations

import os
import sys
import types
from contextlib import contextmanager

import torch

ENV = {"VERL_USE_EXTERNAL_MODULES": "marl.engine.verl.cpu_platform", "VERL_PLATFORM": "cpu",
       "VERL_ENGINE_DEVICE": "cuda"}
ROLLOUT = "cpu"


def ray_env() -> dict[str, str]:
    """The environment of every Ray process of a CPU run: the platform, and one thread each (the
    workers, servers and rollout actors share the machine's cores)."""
    return {**ENV, "OMP_NUM_THREADS": "1"}


def use_here() -> None:
    """Select the CPU platform in this process (the trainer, a policy's driver) before verl asks."""
    os.environ.update(ENV)
    activate()


def _total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _free_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _device_module() -> types.ModuleType:
    """`torch.cpu` with what verl calls on a device module and torch.cpu lacks (or answers in
    another type); the allocator statistics are 0: a CPU has no caching allocator to report."""
    m = types.ModuleType("marl_cpu_device")
    m.__dict__.update({k: getattr(torch.cpu, k) for k in dir(torch.cpu) if not k.startswith("_")})
    zero = lambda *a, **k: 0  # noqa: E731
    none = lambda *a, **k: None  # noqa: E731
    m.__dict__.update(
        is_available=lambda: True, device_count=lambda: 1, current_device=lambda: "cpu", set_device=none,
        synchronize=none, empty_cache=none, ipc_collect=none, reset_peak_memory_stats=none,
        memory_allocated=zero, memory_reserved=zero, max_memory_allocated=zero, max_memory_reserved=zero,
        mem_get_info=lambda *a: (_free_memory(), _total_memory()), get_device_name=lambda *a: "cpu",
        manual_seed=torch.manual_seed, manual_seed_all=torch.manual_seed, get_rng_state=torch.get_rng_state,
        set_rng_state=torch.set_rng_state, memory_stats=lambda *a: {})
    return m


def _platform_class():
    from verl.plugin.platform.platform_base import PlatformBase

    class PlatformCPU(PlatformBase):
        """verl's platform interface on the CPU: one 'device' per process, gloo, no profiler."""

        _module = _device_module()

        device_name = property(lambda self: "cpu")
        vendor_name = property(lambda self: "cpu")
        device_module = property(lambda self: self._module)

        def is_available(self) -> bool:
            return True

        def current_device(self) -> str:
            return "cpu"  # verl moves tensors with .to(current_device()): an index would mean cuda:<index>

        def device_count(self) -> int:
            return 1

        def set_device(self, device_index: int) -> None:
            pass

        def synchronize(self, device_index=None) -> None:
            pass

        def manual_seed(self, seed: int) -> None:
            torch.manual_seed(seed)

        def manual_seed_all(self, seed: int) -> None:
            torch.manual_seed(seed)

        def set_allocator_settings(self, settings: str) -> None:
            pass

        def empty_cache(self) -> None:
            pass

        def get_device_capability(self, device_index: int = 0):
            return None, None

        def communication_backend_name(self) -> str:
            return "gloo"

        def visible_devices_envvar(self) -> str:
            return "MARL_CPU_VISIBLE_DEVICES"  # nothing to hide: a name no runtime reads

        @contextmanager
        def nvtx_range(self, msg: str):
            yield

        def profiler_start(self) -> None:
            pass

        def profiler_stop(self) -> None:
            pass

        def ray_resource_name(self) -> str:
            return "CPU"

        def ray_resource_options(self, num_gpus: float) -> dict:
            return {}  # a worker takes the CPU its placement-group bundle reserves

        def ray_noset_envvars(self) -> list[str]:
            return []

        def is_ipc_supported(self) -> bool:
            return False

        def cudart(self):
            return None

    return PlatformCPU


def _gloo_process_group() -> None:
    """verl's workers call `initialize_global_process_group_ray()` with no backend; on the CPU it
    must be plain gloo (see the module docstring). Only the default changes."""
    from verl.utils import distributed

    fn = distributed.initialize_global_process_group_ray
    if not getattr(fn, "_marl_gloo", False):
        def initialize_global_process_group_ray(timeout_second=None, backend=None):
            return fn(timeout_second=timeout_second, backend=backend or "gloo")
        initialize_global_process_group_ray._marl_gloo = True
        distributed.initialize_global_process_group_ray = initialize_global_process_group_ray


def activate() -> None:
    """Register the CPU platform, process group and rollout in this process (idempotent). Called on
    import in every verl process of a CPU run (`VERL_USE_EXTERNAL_MODULES`)."""
    from verl.plugin.platform import PlatformRegistry
    from verl.workers.rollout import base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    if PlatformRegistry.get("cpu") is None:
        PlatformRegistry.register("cpu")(_platform_class())
    _gloo_process_group()
    base._ROLLOUT_REGISTRY[(ROLLOUT, "async")] = "marl.engine.verl.cpu_rollout.CpuRolloutAdapter"
    RolloutReplicaRegistry.register(ROLLOUT, lambda: __import__(
        "marl.engine.verl.cpu_rollout", fromlist=["CpuReplica"]).CpuReplica)


if "verl" in sys.modules and os.environ.get("VERL_PLATFORM") == "cpu":
    activate()
