"""Which policy plays which role: one small immutable object, used by training, `marl.evaluate`
and the mismatch experiment.

Policy ids of a run: `shared` has one policy, "shared"; `per_role` and `lora` have one per role
of the training harness, named after it. In a harness whose roles the training harness lacks
(evaluating a team's policies as a single agent), such a role is played by the policy of the
training harness's last role, the one whose action advances the task.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping


def policy_ids(kind: str, train_roles: list[str]) -> tuple[str, ...]:
    return ("shared",) if kind == "shared" else tuple(train_roles)


@dataclass(frozen=True)
class Routing:
    roles: Mapping[str, str]  # role -> policy id, in the harness's turn order

    def __post_init__(self):
        object.__setattr__(self, "roles", MappingProxyType(dict(self.roles)))

    def __getitem__(self, role: str) -> str:
        return self.roles[role]

    @classmethod
    def default(cls, kind: str, train_roles: list[str], role_names: list[str]) -> "Routing":
        if kind == "shared":
            return cls({r: "shared" for r in role_names})
        return cls({r: r if r in train_roles else train_roles[-1] for r in role_names})

    def swapped(self, policies: tuple[str, ...]) -> "Routing":
        """Two per-role policies trade places: each role is played by the other's policy."""
        if len(policies) != 2:
            raise ValueError(f"swap_roles needs exactly two per-role policies, the run has {list(policies)}")
        other = {policies[0]: policies[1], policies[1]: policies[0]}
        return Routing({r: other[p] for r, p in self.roles.items()})

    def override(self, explicit: Mapping[str, str], policies: tuple[str, ...]) -> "Routing":
        """An explicit role -> policy mapping on top; names that do not exist are refused."""
        for role, pol in explicit.items():
            if role not in self.roles:
                raise ValueError(f"roles.{role}: no such role here; roles: {sorted(self.roles)}")
            if pol not in policies:
                raise ValueError(f"roles.{role}={pol}: no such policy in the run; policies: {list(policies)}")
        return Routing({**self.roles, **explicit})

    def as_dict(self) -> dict[str, str]:
        return dict(self.roles)
