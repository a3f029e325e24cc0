"""The rollout of one problem: an async function over injected generate clients.

AT-GRPO tree rollout (DESIGN.md): for each turn, for each role in turn order, sample K
candidates from the *same* state, apply each to its own copy (harness states are immutable, so
`await harness.act(state, ...)` is that copy), score each `local + alpha * team` from the state it
produced, record all K under one group key (problem, turn, role), then continue from the chosen
candidate's own resulting state. With K = 1 and temperature 0 the same function is a greedy
evaluation episode; trajectory GRPO runs it K times with K = 1.
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Awaitable

from marl.engine import PolicyClients
from marl.grouping import at_grpo_key
from marl.routing import Routing
from marl.types import ApiError, Episode, GenerateError, PromptOverflow, Sample
from roles.base import Harness


def choose(rewards: list[float], rng: random.Random, how: str = "best") -> int:
    """Index of the candidate to continue from: the best reward (ties broken by `rng`), or a
    uniformly random one (`how="random"`)."""
    if how == "random":
        return rng.randrange(len(rewards))
    if how != "best":
        raise ValueError(f"unknown selection {how!r}; allowed: best, random")
    top = max(rewards)
    return rng.choice([i for i, r in enumerate(rewards) if r == top])


@dataclass(frozen=True)
class RolloutSpec:
    """How one problem is rolled out: K candidates per (turn, role) at `temperature`, each scored
    `local + alpha * team`, continuing from the candidate `select` picks."""

    k: int
    temperature: float
    alpha: float
    select: str = "best"

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")


@dataclass(frozen=True)
class RolloutJob:
    """One problem's rollout as data, so that an engine runs it where it likes: in this process's
    event loop (`engine=local`) or in a Ray actor on another machine (`engine=verl`). Running it
    is `rollout(...)` over the engine's clients, the same function everywhere."""

    harness: Harness
    instance: object
    problem_id: str
    routing: Routing
    spec: RolloutSpec
    rng: random.Random
    episode: int = 0

    def run(self, engine: PolicyClients) -> Awaitable[Episode]:
        """The episode, over `engine`'s prompt ids and clients (an engine, or a verl rollout worker's side)."""
        return rollout(self.harness, self.instance, self.problem_id, engine, self.routing, self.spec,
                       self.rng, self.episode)


async def rollout(harness: Harness, instance, problem_id: str, engine: PolicyClients, routing: Routing,
                  spec: RolloutSpec, rng: random.Random, episode: int = 0) -> Episode:
    """One episode of `problem_id`; `routing` says which of the engine's policies plays each role.

    A prompt longer than its policy's budget (`engine.max_prompt_tokens`) is never sent: the
    episode ends there, failed whatever state it reached (as an unsolved episode at max_turns:
    no further reward), with the overflow recorded (`Episode.overflow`, counted in `train/` and
    evaluation metrics). That (turn, role) has no response, so no samples and no group; the
    turns before it keep theirs, as in an episode that stopped early. A request that fails for good
    (`GenerateError`: an HTTP endpoint's, after its retries) ends the episode the same way, recorded
    in `Episode.api_error`."""
    state = harness.reset(instance)
    samples: list[Sample] = []
    ret = 0.0
    overflow = error = None
    while not state.done and overflow is None and error is None:
        for role in harness.role_names:
            pol = routing[role]
            prompt = harness.prompt(state, role)
            ids = engine.encode(pol, prompt)
            budget = engine.max_prompt_tokens(pol)
            if budget is not None and len(ids) > budget:
                overflow = PromptOverflow(state.turn, role, pol, len(ids), budget)
                break
            client = engine.client(pol)
            try:
                comps = await asyncio.gather(*[client.generate(ids, spec.temperature, request_id=problem_id,
                                                               prompt=prompt) for _ in range(spec.k)])
            except GenerateError as err:  # a request failed for good: this episode ends, the others go on
                error = ApiError(state.turn, role, pol, str(err))
                break
            # each candidate on its own copy of `state`; tool work of all K runs at once
            outs = await asyncio.gather(*[harness.act(state, role, c.text) for c in comps])
            rewards = [o.local + spec.alpha * o.team for o in outs]
            pick = choose(rewards, rng, spec.select)
            key = at_grpo_key(problem_id, state.turn, role)
            for i, (c, o, r) in enumerate(zip(comps, outs, rewards)):
                samples.append(Sample(
                    problem_id=problem_id, turn=state.turn, role=role, policy=pol, candidate=i,
                    prompt=prompt, response=c.text, prompt_ids=ids, response_ids=c.token_ids,
                    logprobs=c.logprobs, temperature=spec.temperature, reward=r, local=o.local,
                    team=o.team, parse_ok=o.parse_ok, chosen=i == pick, episode=episode,
                    group_id=key, info=o.info, usage=c.usage))
            ret += rewards[pick]
            state = outs[pick].state  # continue from the chosen candidate's own copy
            if state.done:
                break
    solved = overflow is None and error is None and bool(harness.task.is_solved(state.task_state))
    return Episode(problem_id, samples, solved, state.turn, ret, overflow, error)
