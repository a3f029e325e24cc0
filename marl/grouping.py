"""Group keys: explicit strings that travel with every sample.

AT-GRPO (`at_grpo`) normalises within (problem, turn, role); trajectory GRPO (`grpo`) within the
problem. The key is built from the fields themselves, never from a position or an index
arithmetic (the reference code divided a problem index by K and merged K problems into one group).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from marl.types import Sample

SEP = "|"


def at_grpo_key(problem_id: str, turn: int, role: str) -> str:
    if SEP in problem_id or SEP in role:
        raise ValueError(f"problem_id and role must not contain {SEP!r}: {problem_id!r}, {role!r}")
    return f"{problem_id}{SEP}t{turn}{SEP}{role}"


def trajectory_key(problem_id: str) -> str:
    return problem_id


def regroup_by_problem(samples: list[Sample], returns: dict[tuple[str, int], float]) -> list[Sample]:
    """Trajectory GRPO: new samples, each with its episode's return as its reward and the problem
    as its group (the rollout's samples are left as they are)."""
    return [replace(s, group_id=trajectory_key(s.problem_id), reward=returns[(s.problem_id, s.episode)])
            for s in samples]


def check_groups(samples: list[Sample], k: int, per: str = "at_grpo") -> dict[str, float]:
    """Assert the grouping invariants; returns group statistics (adv/n_groups, adv/group_size:
    the mean samples per group).

    at_grpo: every group has exactly K members sharing one (problem, turn, role) and one prompt.
    grpo (trajectory): every group holds one problem and K episodes."""
    if per not in ("at_grpo", "grpo"):
        raise ValueError(f"unknown grouping {per!r}; allowed: at_grpo, grpo")
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.group_id].append(s)
    for gid, members in groups.items():
        if len({m.problem_id for m in members}) != 1:
            raise AssertionError(f"group {gid} mixes problems {sorted({m.problem_id for m in members})}")
        if per == "at_grpo":
            if len(members) != k:
                raise AssertionError(f"group {gid} has {len(members)} members, expected K={k}")
            if len({(m.turn, m.role) for m in members}) != 1 or len({m.prompt for m in members}) != 1:
                raise AssertionError(f"group {gid} mixes turns, roles or prompts")
        elif len({m.episode for m in members}) != k:
            raise AssertionError(f"group {gid} has {len({m.episode for m in members})} episodes, expected {k}")
    return {"adv/n_groups": float(len(groups)), "adv/group_size": len(samples) / max(len(groups), 1)}
