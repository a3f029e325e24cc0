"""Standard environment APIs over a harness: a PettingZoo AEC env for any harness (roles take
turns; observations and actions are text) and a Gymnasium env for a one-role harness.

Both are thin wrappers over `Harness.act`; the trainer's branching rollout calls the same
function, so there is one implementation of the transition and the rewards.
"""
from __future__ import annotations

import string
from typing import Any

import gymnasium
import numpy as np
from gymnasium.spaces import Text
from pettingzoo import AECEnv

from roles.base import Harness, TeamState

CHARSET = string.printable
MAX_TEXT = 4096


def _text_space(seed: int | None = None) -> Text:
    return Text(max_length=MAX_TEXT, charset=CHARSET, seed=seed)


def _instance(harness: Harness, seed: int | None, options: dict | None):
    """Instance chosen by options {"split", "index"}, else by the reset seed (train split)."""
    options = options or {}
    split = options.get("split", "train")
    index = options["index"] if "index" in options else int(np.random.default_rng(seed).integers(1 << 30))
    return harness.task.instance(split, index)


class TeamEnv(AECEnv):
    """PettingZoo AEC env: agents are the harness's roles, in turn order, for up to max_turns."""

    metadata = {"name": "marl_team_v0", "render_modes": ["ansi"], "is_parallelizable": False}

    def __init__(self, harness: Harness, alpha: float = 1.0, render_mode: str | None = None):
        super().__init__()
        self.harness, self.alpha, self.render_mode = harness, alpha, render_mode
        self.possible_agents = list(harness.role_names)
        self.observation_spaces = {a: _text_space() for a in self.possible_agents}
        self.action_spaces = {a: _text_space() for a in self.possible_agents}
        self.state_: TeamState | None = None

    def observation_space(self, agent):
        return self.observation_spaces[agent]

    def action_space(self, agent):
        return self.action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        if seed is not None:
            for a in self.possible_agents:
                self.action_spaces[a].seed(seed)
        self.state_ = self.harness.reset(_instance(self.harness, seed, options))
        self.agents = list(self.possible_agents)
        self._idx = 0
        self.agent_selection = self.agents[0]
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {a: {} for a in self.agents}

    def observe(self, agent: str) -> str:
        assert self.state_ is not None, "call reset() first"
        return self.harness.prompt(self.state_, agent)[-MAX_TEXT:]

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        self.rewards = {a: 0.0 for a in self.agents}
        out = self.harness.act_sync(self.state_, agent, str(action))
        self.state_ = out.state
        self.rewards[agent] = out.local + self.alpha * out.team
        self.infos[agent] = {"parse_ok": out.parse_ok, **out.info}
        if out.state.done:
            for a in self.agents:
                self.terminations[a] = out.solved
                self.truncations[a] = not out.solved
        self._idx = (self._idx + 1) % len(self.agents)
        self.agent_selection = self.agents[self._idx]
        self._accumulate_rewards()

    def render(self) -> str:
        return self.observe(self.agent_selection)

    def close(self) -> None:
        pass


class SingleAgentEnv(gymnasium.Env):
    """Gymnasium env for a harness with exactly one role (e.g. `harness=single`)."""

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, harness: Harness, alpha: float = 1.0, render_mode: str | None = None):
        if len(harness.roles) != 1:
            raise ValueError(f"SingleAgentEnv needs a one-role harness; {harness.name!r} has {harness.role_names}")
        self.harness, self.alpha, self.render_mode = harness, alpha, render_mode
        self.role = harness.role_names[0]
        self.observation_space = _text_space()
        self.action_space = _text_space()
        self.state_: TeamState | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.action_space.seed(seed)
        self.state_ = self.harness.reset(_instance(self.harness, seed, options))
        return self.harness.prompt(self.state_, self.role)[-MAX_TEXT:], {}

    def step(self, action: str):
        assert self.state_ is not None, "call reset() first"
        out = self.harness.act_sync(self.state_, self.role, str(action))
        self.state_ = out.state
        obs = self.harness.prompt(out.state, self.role)[-MAX_TEXT:]
        reward = out.local + self.alpha * out.team
        info = {"parse_ok": out.parse_ok, **out.info}
        # the episode ends when the harness says so (an observable stop, or max_turns), solved or not
        return obs, float(reward), out.state.done and out.solved, out.state.done and not out.solved, info

    def render(self) -> str:
        return self.harness.prompt(self.state_, self.role)
