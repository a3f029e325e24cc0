"""The training algorithms as strategies, by their config name (`algo.name`): how one problem
becomes the step's rollout jobs, how the episodes' samples are grouped, the invariants the groups
keep (their statistics logged under `adv/`) and the advantage estimator they feed
(`marl.advantage.ESTIMATORS`, verl's registry).

- `at_grpo`: one tree per problem, K candidates per (problem, turn, role) from the same state.
- `grpo`: trajectory-level GRPO, K independent episodes per problem grouped by the problem, each
  sample rewarded with its episode's return.
"""
from __future__ import annotations

import random
from dataclasses import replace
from typing import Protocol

from marl.grouping import check_groups, regroup_by_problem
from marl.rollout import RolloutJob, RolloutSpec
from marl.types import Episode, Sample


class Algo(Protocol):
    name: str       # algo.name
    estimator: str  # its advantage estimator (marl.advantage.ESTIMATORS)

    def jobs(self, harness, instance, problem_id: str, routing, spec: RolloutSpec,
             rng: random.Random) -> list[RolloutJob]: ...

    def regroup(self, episodes: list[Episode]) -> list[Sample]: ...

    def check(self, samples: list[Sample], k: int) -> dict[str, float]: ...


class ATGRPO:
    name = "at_grpo"
    estimator = "at_grpo"

    def jobs(self, harness, instance, problem_id: str, routing, spec: RolloutSpec,
             rng: random.Random) -> list[RolloutJob]:
        return [RolloutJob(harness, instance, problem_id, routing, spec, rng)]

    def regroup(self, episodes: list[Episode]) -> list[Sample]:
        return [s for ep in episodes for s in ep.samples]

    def check(self, samples: list[Sample], k: int) -> dict[str, float]:
        return check_groups(samples, k, per=self.name)


class TrajectoryGRPO:
    name = "grpo"
    estimator = "grpo"

    def jobs(self, harness, instance, problem_id: str, routing, spec: RolloutSpec,
             rng: random.Random) -> list[RolloutJob]:
        one = replace(spec, k=1)  # K episodes of one candidate each, each from its own seed
        return [RolloutJob(harness, instance, problem_id, routing, one, random.Random(rng.random()), episode=e)
                for e in range(spec.k)]

    def regroup(self, episodes: list[Episode]) -> list[Sample]:
        samples = [s for ep in episodes for s in ep.samples]
        # an episode that ended on its first prompt (over the prompt budget) has no samples to reward
        return regroup_by_problem(samples, {(ep.problem_id, ep.samples[0].episode): ep.return_
                                            for ep in episodes if ep.samples})

    def check(self, samples: list[Sample], k: int) -> dict[str, float]:
        return check_groups(samples, k, per=self.name)


ALGOS = {a.name: a for a in (ATGRPO(), TrajectoryGRPO())}


def get(name: str) -> Algo:
    """The algorithm registered as `name` (conf/algo/<name>.yaml)."""
    if name not in ALGOS:
        raise ValueError(f"unknown algo {name!r}; allowed: {', '.join(ALGOS)}")
    return ALGOS[name]
