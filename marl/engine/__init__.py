"""Engines: the model runtime behind one interface, chosen by `engine.name` from a registry.

The trainer owns the algorithm (rollout, grouping, advantages, selection, logging); an engine
owns models, tokenizers, optimizers, schedules and generation. The trainer reaches a policy only
through this interface, by policy id:

- `client(pid)`: an async token-in/token-out `GenerateClient`; `encode(pid, prompt)`: its prompt ids;
- `gather(jobs)`: run one step's `RolloutJob`s concurrently, results in their order (the local
  engine batches their generate calls, `marl.engine.local.batching`; the verl engine runs them in
  CPU Ray actors);
- `update(pid, batch, spec, rng) -> metrics`: PPO on that policy's `TrainSample`s;
- `sync_weights()`: make the trained weights the ones generation uses (nothing to do locally;
  the weight push into rollout servers on a cluster);
- `save(dir)` / `load(dir, weights_only=False)`: every policy's weights, optimizer and schedule;
- `stats()` / `reset_stats()`: generation counts and seconds, for `timing/` metrics.

Engines register by name (`register_engine`), as a class or as "module:Class" so an engine's
heavy imports (verl, Ray) are paid only by runs that use it; a name is registered once.
"""
from __future__ import annotations

import asyncio
import importlib
import random
from abc import ABC, abstractmethod
from pathlib import Path

from marl.engine.spec import EngineSpec, LoraSpec, OptimSpec, UpdateSpec
from marl.types import GenerateClient, TrainSample

__all__ = ["Engine", "EngineSpec", "LoraSpec", "OptimSpec", "UpdateSpec", "engine_names", "make_engine",
           "register_engine"]


class Engine(ABC):
    spec: EngineSpec

    @property
    def policy_ids(self) -> tuple[str, ...]:
        return self.spec.policy_ids

    @abstractmethod
    def client(self, policy_id: str) -> GenerateClient: ...

    @abstractmethod
    def encode(self, policy_id: str, prompt: str) -> list[int]: ...

    async def gather(self, jobs: list) -> list:
        """Run one step's `marl.rollout.RolloutJob`s concurrently; their episodes in their order."""
        return list(await asyncio.gather(*[job.run(self) for job in jobs]))

    @abstractmethod
    def update(self, policy_id: str, batch: list[TrainSample], spec: UpdateSpec,
               rng: random.Random) -> dict[str, float]: ...

    def sync_weights(self) -> None:
        """Make the weights `update` trained the ones `client` generates with."""

    @abstractmethod
    def save(self, directory: Path) -> None: ...

    @abstractmethod
    def load(self, directory: Path, weights_only: bool = False) -> None: ...

    @abstractmethod
    def stats(self) -> dict[str, float]:
        """Since the last reset: generate calls, sequences, new tokens, seconds."""

    @abstractmethod
    def reset_stats(self) -> None: ...

    def close(self) -> None:
        pass

    @classmethod
    def read_settings(cls, section: dict):
        """The engine's own typed settings from its config group (conf/engine/<name>.yaml), or
        None where it has none beyond `name`."""
        return None

    @classmethod
    def check_environment(cls, settings, n_policies: int) -> None:
        """Refuse, before anything is built, a machine this engine cannot run on."""

    def check_policy(self, policy_id: str) -> None:
        if policy_id not in self.policy_ids:
            raise ValueError(f"no policy {policy_id!r} in this engine; policies: {list(self.policy_ids)}")


_ENGINES: dict[str, type[Engine] | str] = {}


def register_engine(name: str, engine: type[Engine] | str) -> None:
    if name in _ENGINES:
        raise ValueError(f"engine {name!r} is already registered")
    _ENGINES[name] = engine


def engine_names() -> list[str]:
    return sorted(_ENGINES)


def engine_class(name: str) -> type[Engine]:
    if name not in _ENGINES:
        raise ValueError(f"unknown engine {name!r}; registered: {', '.join(engine_names())}")
    cls = _ENGINES[name]
    if isinstance(cls, str):
        module, attr = cls.split(":")
        cls = getattr(importlib.import_module(module), attr)
    return cls


def make_engine(spec: EngineSpec) -> Engine:
    return engine_class(spec.name)(spec)


register_engine("local", "marl.engine.local:LocalEngine")
register_engine("verl", "marl.engine.verl:VerlEngine")
