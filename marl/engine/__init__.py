"""Engines: the model runtime behind one interface, chosen by `engine.name` from a registry.

The trainer owns the algorithm (rollout, grouping, advantages, selection, logging); an engine
owns models, tokenizers, optimizers, schedules and generation. The trainer reaches a policy only
through this interface, by policy id, in two halves:

- `PolicyClients` (what one rollout needs): `encode(pid, prompt)`, `client(pid)`, an async
  token-in/token-out `GenerateClient`, and `max_prompt_tokens(pid)`, the prompt budget;
- `RolloutEngine` (what rollout collection and evaluation need): those, `policy_ids`,
  `gather(jobs)` (one step's `RolloutJob`s concurrently, results in their order: the local engine
  batches their generate calls, `marl.engine.local.batching`; the verl engine runs them in CPU
  Ray actors), `stats()` / `reset_stats()` for `timing/` metrics, and `close()`;
- `Learner` (what training needs beside): `update`, `sync_weights`, `save`, `load`.

`Engine` is both halves plus construction from an `EngineSpec` (the local and verl engines); a
generate-only engine (engine=openai, an OpenAI-compatible endpoint) implements `RolloutEngine`
alone (`trains = False`: marl.train refuses it), so `marl.rollout`, `marl.episodes` and
evaluation are typed against the rollout side only.

Engines register by name (`register_engine`), as a class or as "module:Class" so an engine's
heavy imports (verl, Ray) are paid only by runs that use it; a name is registered once.
"""
from __future__ import annotations

import asyncio
import importlib
import random
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable, Protocol, runtime_checkable

from marl.engine.spec import EngineSpec, LoraSpec, OptimSpec, UpdateSpec
from marl.types import Episode, GenerateClient, TrainSample

if TYPE_CHECKING:
    from marl.rollout import RolloutJob

__all__ = ["Engine", "EngineSpec", "Learner", "LoraSpec", "OptimSpec", "PolicyClients", "RolloutEngine",
           "UpdateSpec", "engine_names", "make_engine", "register_engine"]


@runtime_checkable
class PolicyClients(Protocol):
    """What one rollout (`marl.rollout.rollout`) needs: prompt ids, a generate client and the
    longest prompt it accepts, per policy."""

    @abstractmethod
    def encode(self, policy_id: str, prompt: str) -> list[int]:
        """The prompt ids `policy_id` generates from (`marl.engine.tokens` for a local model)."""

    @abstractmethod
    def client(self, policy_id: str) -> GenerateClient:
        """`policy_id`'s async generate client; an unknown policy id is refused."""

    @abstractmethod
    def max_prompt_tokens(self, policy_id: str) -> int | None:
        """The longest prompt (in `encode`'s ids) `policy_id` generates from (engine=verl:
        engine.prompt_length; engine=local: the model's context); None: no limit. The rollout never sends a longer one: the episode ends
        there, failed (`marl.rollout`), where a server would refuse it and fail the whole step."""


@runtime_checkable
class RolloutEngine(PolicyClients, Protocol):
    """The rollout side: what rollout collection and evaluation need of an engine. Subclassing
    it explicitly inherits `gather` and `close`."""

    @property
    @abstractmethod
    def policy_ids(self) -> tuple[str, ...]:
        """The policies `encode` and `client` accept, in a fixed order."""

    trains = False  # whether marl.train can train with it (an `Engine`'s learner side)

    async def gather(self, jobs: list[RolloutJob], on_done: OnDone | None = None) -> list[Episode]:
        """Run one step's `RolloutJob`s concurrently; their episodes in their order. `on_done(i,
        episode)` is called as each finishes (marl.evaluate appends it to its record there)."""
        return list(await asyncio.gather(*[reporting(i, job.run(self), on_done) for i, job in enumerate(jobs)]))

    @abstractmethod
    def stats(self) -> dict[str, float]:
        """Since the last reset: generate calls, sequences, new tokens, seconds."""

    @abstractmethod
    def reset_stats(self) -> None:
        """Start the counts of `stats` again from zero."""

    def close(self) -> None:
        """Release what generation holds (servers, processes); nothing by default."""


@runtime_checkable
class Learner(Protocol):
    """The learner side: training the policies the rollout side generates with."""

    @abstractmethod
    def update(self, policy_id: str, batch: list[TrainSample], spec: UpdateSpec,
               rng: random.Random) -> dict[str, float]:
        """PPO on `policy_id`'s own `TrainSample`s; the update's metrics."""

    def sync_weights(self) -> None:
        """Make the weights `update` trained the ones generation uses (nothing to do locally)."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Every policy's weights, optimizer and schedule under `directory`."""

    @abstractmethod
    def load(self, directory: Path, weights_only: bool = False) -> None:
        """What `save` wrote (only the weights if `weights_only`); a checkpoint of other policies is refused."""


class Engine(RolloutEngine, Learner, ABC):
    """Both sides, built from an `EngineSpec` by `make_engine` (the local and verl engines)."""

    spec: EngineSpec
    trains = True

    @property
    def policy_ids(self) -> tuple[str, ...]:
        return self.spec.policy_ids

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


OnDone = Callable[[int, Episode], None]


async def reporting(i: int, episode: Awaitable[Episode], on_done: OnDone | None) -> Episode:
    """`episode`, awaited, then reported as job `i`'s to `on_done` (if any)."""
    ep = await episode
    if on_done is not None:
        on_done(i, ep)
    return ep


# an `Engine`, or a generate-only `RolloutEngine` built from an EngineSpec the same way (engine=openai)
_ENGINES: dict[str, type[RolloutEngine] | str] = {}


def register_engine(name: str, engine: type[RolloutEngine] | str) -> None:
    if name in _ENGINES:
        raise ValueError(f"engine {name!r} is already registered")
    _ENGINES[name] = engine


def engine_names() -> list[str]:
    return sorted(_ENGINES)


def engine_class(name: str) -> type[Engine]:
    """The registered class (an `Engine`, or a generate-only engine with `trains = False`)."""
    if name not in _ENGINES:
        raise ValueError(f"unknown engine {name!r}; registered: {', '.join(engine_names())}")
    cls = _ENGINES[name]
    if isinstance(cls, str):
        module, attr = cls.split(":")
        cls = getattr(importlib.import_module(module), attr)
    return cls


def make_engine(spec: EngineSpec) -> Engine:
    return engine_class(spec.name)(spec)


def training_engines() -> list[str]:
    """The registered engines marl.train can train with."""
    return [n for n in engine_names() if engine_class(n).trains]


register_engine("local", "marl.engine.local:LocalEngine")
register_engine("verl", "marl.engine.verl:VerlEngine")
register_engine("openai", "marl.engine.openai_api:OpenAIEngine")
